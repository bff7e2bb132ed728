//! [`GridError`] <-> `tonic::Status`, so errors keep their kind across the
//! network: the kind travels in the `hg-error-kind` metadata entry.

use std::time::Duration;

use hybridgrid_core::GridError;
use tonic::{Code, Status};

const KIND_KEY: &str = "hg-error-kind";

/// The gRPC status for a grid error.
pub fn to_status(e: &GridError) -> Status {
    let (code, kind, msg) = match e {
        GridError::NoWorker(m) => (Code::Unavailable, "no-worker", m.clone()),
        GridError::CircuitOpen => (Code::Unavailable, "circuit-open", e.to_string()),
        GridError::Overloaded(m) => (Code::ResourceExhausted, "overloaded", m.clone()),
        GridError::WorkerUnavailable { worker, reason } => (
            Code::Unavailable,
            "worker-unavailable",
            format!("{worker}\n{reason}"),
        ),
        GridError::CoordinatorUnavailable(m) => {
            (Code::Unavailable, "coordinator-unavailable", m.clone())
        }
        GridError::DeadlineExceeded(d) => (
            Code::DeadlineExceeded,
            "deadline",
            d.as_millis().to_string(),
        ),
        GridError::InvalidTask(m) => (Code::InvalidArgument, "invalid", m.clone()),
        GridError::DockerUnavailable(m) => (Code::FailedPrecondition, "docker", m.clone()),
        GridError::Internal(m) => (Code::Internal, "internal", m.clone()),
        GridError::Unauthenticated(m) => (Code::Unauthenticated, "unauthenticated", m.clone()),
        GridError::MissingInputs(paths) => {
            (Code::FailedPrecondition, "missing-inputs", paths.join("\n"))
        }
        other => (Code::Internal, "internal", other.to_string()),
    };
    let mut s = Status::new(code, msg);
    if let Ok(v) = kind.parse() {
        s.metadata_mut().insert(KIND_KEY, v);
    }
    s
}

/// The grid error for a gRPC status received from `peer` (a name or
/// address used in messages).
pub fn from_status(s: &Status, peer: &str) -> GridError {
    let kind = s
        .metadata()
        .get(KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let msg = s.message().to_owned();
    match kind {
        "no-worker" => GridError::NoWorker(msg),
        "circuit-open" => GridError::CircuitOpen,
        "overloaded" => GridError::Overloaded(msg),
        "worker-unavailable" => {
            let (w, r) = msg.split_once('\n').unwrap_or((peer, msg.as_str()));
            GridError::WorkerUnavailable {
                worker: w.to_owned(),
                reason: r.to_owned(),
            }
        }
        "coordinator-unavailable" => GridError::CoordinatorUnavailable(msg),
        "deadline" => {
            GridError::DeadlineExceeded(Duration::from_millis(msg.parse().unwrap_or_default()))
        }
        "invalid" => GridError::InvalidTask(msg),
        "docker" => GridError::DockerUnavailable(msg),
        "internal" => GridError::Internal(msg),
        "unauthenticated" => GridError::Unauthenticated(msg),
        "missing-inputs" => GridError::MissingInputs(msg.lines().map(str::to_owned).collect()),
        _ => match s.code() {
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
                GridError::WorkerUnavailable {
                    worker: peer.to_owned(),
                    reason: describe_transport(s),
                }
            }
            Code::DeadlineExceeded => GridError::DeadlineExceeded(Duration::ZERO),
            Code::ResourceExhausted => GridError::Overloaded(msg),
            Code::InvalidArgument | Code::OutOfRange => GridError::InvalidTask(msg),
            Code::Unauthenticated => GridError::Unauthenticated(msg),
            _ => GridError::Internal(format!("{:?}: {msg}", s.code())),
        },
    }
}

/// A readable reason for a transport-level failure, with the root cause
/// (e.g. `connection refused`).
pub fn describe_transport(s: &Status) -> String {
    use std::error::Error as _;
    if let Some(m) = crate::tls::HandshakeError::find_message(s) {
        return m;
    }
    let mut parts = vec![s.message().to_owned()];
    let mut cur = s.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = e.source();
    }
    let joined = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if joined.to_ascii_lowercase().contains("connection refused") {
        joined.replace("Connection refused", "connection refused")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_kind() {
        for e in [
            GridError::NoWorker("none for gcc 12".into()),
            GridError::CircuitOpen,
            GridError::Overloaded("500 in flight".into()),
            GridError::WorkerUnavailable {
                worker: "w1".into(),
                reason: "connection refused".into(),
            },
            GridError::DeadlineExceeded(Duration::from_secs(300)),
            GridError::CoordinatorUnavailable("connection refused (h:1)".into()),
            GridError::InvalidTask("bad".into()),
            GridError::DockerUnavailable("no socket".into()),
            GridError::Internal("boom".into()),
            GridError::Unauthenticated("wrong auth token".into()),
            GridError::MissingInputs(vec!["/usr/include/a.h".into(), "/usr/include/b.h".into()]),
        ] {
            assert_eq!(from_status(&to_status(&e), "peer"), e);
        }
    }

    #[test]
    fn plain_statuses_are_classified() {
        let e = from_status(&Status::unavailable("tcp connect error"), "10.0.0.1:9000");
        assert!(e.is_retryable());
        assert!(e.to_string().contains("10.0.0.1:9000"));
    }
}
