//! The Remote Execution API (REAPI v2, `build.bazel.remote.execution.v2`)
//! on the coordinator's gRPC port, for Bazel, Buck2, BuildStream, recc and
//! other REAPI clients (`coordinator.reapi.enabled`; docs/reapi.md).
//!
//! Served so far: `Capabilities`, answering truthfully what this endpoint
//! does: API version 2.0, SHA-256 digests, and neither a cache nor remote
//! execution yet (the content-addressable storage and the action cache
//! come next). The services share the coordinator's TLS, token check and
//! `TCP_NODELAY` listener: they are added to the same router.
//!
//! Wire types come from the maintained `bazel-remote-apis` crate.

use bazel_remote_apis::build::bazel::remote::execution::v2 as re;
use bazel_remote_apis::build::bazel::semver::SemVer;
use tonic::{Request, Response, Status};

pub use re::capabilities_server::CapabilitiesServer;

/// The REAPI services of a coordinator: one instance, by name.
#[derive(Clone, Debug, Default)]
pub struct ReapiServer {
    instance_name: String,
}

impl ReapiServer {
    /// Serves the instance `instance_name` (`--remote_instance_name`;
    /// empty for the default instance, which clients use when they give
    /// none).
    pub fn new(instance_name: impl Into<String>) -> Self {
        ReapiServer {
            instance_name: instance_name.into(),
        }
    }

    /// The instance it serves.
    pub fn instance_name(&self) -> &str {
        &self.instance_name
    }

    /// Refuses a request for an instance this server does not serve, with
    /// `InvalidArgument` and both names.
    pub fn check_instance(&self, asked: &str) -> Result<(), Status> {
        if asked == self.instance_name {
            return Ok(());
        }
        Err(Status::invalid_argument(format!(
            "unknown instance name {asked:?}: this coordinator serves {:?} \
             (coordinator.reapi.instance_name); give it with --remote_instance_name",
            self.instance_name
        )))
    }

    /// What this endpoint supports: REAPI 2.0, and no cache and no remote
    /// execution yet, so a client asked to use it as a remote cache stops
    /// at once with its own message rather than failing call by call.
    pub fn capabilities(&self) -> re::ServerCapabilities {
        let v2 = SemVer {
            major: 2,
            minor: 0,
            patch: 0,
            prerelease: String::new(),
        };
        re::ServerCapabilities {
            cache_capabilities: None,
            execution_capabilities: None,
            deprecated_api_version: None,
            low_api_version: Some(v2.clone()),
            high_api_version: Some(v2),
        }
    }

    /// The `Capabilities` gRPC service.
    pub fn capabilities_service(&self) -> CapabilitiesServer<ReapiServer> {
        CapabilitiesServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl re::capabilities_server::Capabilities for ReapiServer {
    async fn get_capabilities(
        &self,
        request: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        self.check_instance(&request.get_ref().instance_name)?;
        Ok(Response::new(self.capabilities()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_checked() {
        let s = ReapiServer::new("main");
        assert!(s.check_instance("main").is_ok());
        let e = s.check_instance("other").expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("\"other\""), "{}", e.message());
        assert!(e.message().contains("coordinator.reapi.instance_name"));
        assert!(ReapiServer::default().check_instance("").is_ok());
    }

    #[test]
    fn capabilities_claim_nothing_not_served() {
        let c = ReapiServer::default().capabilities();
        assert!(c.cache_capabilities.is_none());
        assert!(c.execution_capabilities.is_none());
        assert_eq!(c.low_api_version.map(|v| (v.major, v.minor)), Some((2, 0)));
    }
}
