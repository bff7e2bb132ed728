//! Black-box test of the REAPI endpoint: the real hg-coord with
//! `coordinator.reapi.enabled`, called with the generated client of the
//! `bazel-remote-apis` crate as a REAPI client (Bazel) calls it. The
//! capabilities are answered on the grid's gRPC port with its token check;
//! an unknown instance name is refused; a coordinator without it answers
//! `Unimplemented`.

mod support;

use bazel_remote_apis::build::bazel::remote::execution::v2::GetCapabilitiesRequest;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
use support::*;
use tonic::Code;

const TOKEN: &str = "reapi-test-token-7c2e";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// GetCapabilities on `addr` for `instance`, with `token` as Bazel's
/// `--remote_header=authorization=Bearer ...` sends it.
fn capabilities(
    addr: &str,
    instance: &str,
    token: Option<&str>,
) -> Result<bazel_remote_apis::build::bazel::remote::execution::v2::ServerCapabilities, tonic::Status>
{
    rt().block_on(async {
        let mut client = CapabilitiesClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let mut req = tonic::Request::new(GetCapabilitiesRequest {
            instance_name: instance.into(),
        });
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let call = client.get_capabilities(req);
        match tokio::time::timeout(std::time::Duration::from_secs(30), call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => panic!("GetCapabilities did not answer within 30 s"),
        }
    })
}

#[test]
fn capabilities_are_served_with_the_grids_token_and_instance() {
    let coord = start_coordinator_env(
        &[],
        &[
            ("HG_COORDINATOR__REAPI__ENABLED", "true"),
            ("HG_COORDINATOR__REAPI__INSTANCE_NAME", "team/main"),
            ("HG_AUTH__ENABLED", "true"),
            ("HG_AUTH__TOKEN", TOKEN),
        ],
    );
    let caps = capabilities(&coord.grpc, "team/main", Some(TOKEN)).expect("capabilities");
    let low = caps.low_api_version.clone().expect("low API version");
    assert_eq!((low.major, low.minor), (2, 0));
    assert!(
        caps.cache_capabilities.is_none() && caps.execution_capabilities.is_none(),
        "no cache or execution is claimed before they are served: {caps:?}"
    );

    let e = capabilities(&coord.grpc, "other", Some(TOKEN)).expect_err("unknown instance");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("team/main"), "{}", e.message());

    let e = capabilities(&coord.grpc, "team/main", None).expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = capabilities(&coord.grpc, "team/main", Some("wrong")).expect_err("wrong token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[test]
fn off_by_default() {
    let coord = start_coordinator(&[]);
    let e = capabilities(&coord.grpc, "", None).expect_err("not served");
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
}
