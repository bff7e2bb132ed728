//! Sending each task to one of two executors.
//!
//! A worker with Docker images composes its executor as
//! `RoutingExecutor::docker_or_native` (with the `docker` feature): tasks
//! whose compiler the worker lacks natively but an image has (or whose
//! target architecture is configured for Docker) go to the Docker executor,
//! the rest to the native one. Any two executors and any rule compose the
//! same way with [`RoutingExecutor::new`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hybridgrid_core::can_run::CanRun;
use hybridgrid_core::task::{CompileOutput, CompileTask};
use hybridgrid_core::{BoxError, GridError};
use tower::ServiceExt;

use crate::Executor;

type Rule = Arc<dyn Fn(&CompileTask) -> bool + Send + Sync>;

/// Runs a task on `secondary` when the rule says so, else on `primary`.
#[derive(Clone)]
pub struct RoutingExecutor<A, B> {
    primary: A,
    secondary: B,
    to_secondary: Rule,
}

impl<A: std::fmt::Debug, B: std::fmt::Debug> std::fmt::Debug for RoutingExecutor<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingExecutor")
            .field("primary", &self.primary)
            .field("secondary", &self.secondary)
            .finish()
    }
}

impl<A, B> RoutingExecutor<A, B> {
    /// Routes tasks for which `to_secondary` is true to `secondary`.
    pub fn new(
        primary: A,
        secondary: B,
        to_secondary: impl Fn(&CompileTask) -> bool + Send + Sync + 'static,
    ) -> Self {
        RoutingExecutor {
            primary,
            secondary,
            to_secondary: Arc::new(to_secondary),
        }
    }

    /// The executor most tasks go to.
    pub fn primary(&self) -> &A {
        &self.primary
    }

    /// The executor the rule selects.
    pub fn secondary(&self) -> &B {
        &self.secondary
    }
}

#[cfg(feature = "docker")]
impl RoutingExecutor<crate::native::NativeExecutor, crate::docker::DockerExecutor> {
    /// Native compiles whenever the worker has the task's compiler itself
    /// (faster, and the same output); otherwise tasks whose compiler is in
    /// a Docker image, or whose target architecture is configured for
    /// Docker, go to the Docker executor (which answers
    /// `Docker not available: <reason>` when Docker is not usable).
    pub fn docker_or_native(
        native: crate::native::NativeExecutor,
        docker: crate::docker::DockerExecutor,
    ) -> Self {
        let (n, d) = (native.clone(), docker.clone());
        RoutingExecutor::new(native, docker, move |task| {
            !n.compilers().iter().any(|c| c.identity == task.compiler)
                && (d.handles(task) || d.configured_for(&task.compiler.target_arch()))
        })
    }
}

impl<A: CanRun, B: CanRun> CanRun for RoutingExecutor<A, B> {
    /// What the executor the rule chooses for `task` answers.
    fn can_run(&self, task: &CompileTask) -> Result<(), GridError> {
        if (self.to_secondary)(task) {
            self.secondary.can_run(task)
        } else {
            self.primary.can_run(task)
        }
    }
}

impl<A: Executor, B: Executor> tower::Service<CompileTask> for RoutingExecutor<A, B> {
    type Response = CompileOutput;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<CompileOutput, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is checked on the chosen executor in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: CompileTask) -> Self::Future {
        if (self.to_secondary)(&task) {
            Box::pin(self.secondary.clone().oneshot(task))
        } else {
            Box::pin(self.primary.clone().oneshot(task))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hybridgrid_core::payload::Payload;
    use hybridgrid_core::task::{CompilerFamily, CompilerIdentity, DriverKind, Language};

    /// Answers yes or no, naming itself.
    struct Says(&'static str, bool);

    impl CanRun for Says {
        fn can_run(&self, _task: &CompileTask) -> Result<(), GridError> {
            if self.1 {
                Ok(())
            } else {
                Err(GridError::InvalidTask(self.0.into()))
            }
        }
    }

    fn task(target: &str) -> CompileTask {
        CompileTask::new(
            CompilerIdentity {
                family: CompilerFamily::Gcc,
                driver: DriverKind::C,
                version: "12.2.0".into(),
                target: target.into(),
            },
            Language::PreprocessedC,
            vec![],
            "x.c",
            Payload::raw(b"int x;".to_vec()),
        )
    }

    #[test]
    fn admission_asks_the_executor_the_rule_chooses() {
        let r = RoutingExecutor::new(Says("native", false), Says("docker", true), |t| {
            t.compiler.target.starts_with("aarch64")
        });
        assert!(r.can_run(&task("aarch64-linux-gnu")).is_ok());
        let e = r
            .can_run(&task("x86_64-linux-gnu"))
            .expect_err("native says no");
        assert!(e.to_string().contains("native"), "{e}");
    }
}
