//! Whether an executor would run a task: the question a worker asks before
//! a task waits for one of its slots.
//!
//! Executors answer for themselves (the native executor by the compilers it
//! detected, the Docker executor by its images and configured
//! architectures, a routing executor by the executor it would choose).
//! [`Capabilities`] answer from what a worker advertised, for an executor
//! that cannot say.

use crate::error::GridError;
use crate::task::CompileTask;
use crate::worker::{Capabilities, CompilerInfo};

/// Answers whether `task` would run here, before it is queued.
pub trait CanRun: Send + Sync {
    /// `Ok` when this would run `task`; otherwise why not (an
    /// [`GridError::InvalidTask`] naming what is missing).
    fn can_run(&self, task: &CompileTask) -> Result<(), GridError>;
}

impl CanRun for Capabilities {
    /// A compiler it advertised, or a Docker image for the task's target.
    fn can_run(&self, task: &CompileTask) -> Result<(), GridError> {
        if self.compilers.iter().any(|c| c.identity == task.compiler)
            || self
                .docker_images
                .iter()
                .any(|d| d.arch == task.target_arch)
        {
            return Ok(());
        }
        Err(unknown_compiler(task, &self.compilers))
    }
}

/// The refusal of a task whose compiler is not among `have`, at admission.
pub fn unknown_compiler(task: &CompileTask, have: &[CompilerInfo]) -> GridError {
    missing_compiler(task, have, "is not one this worker detected")
}

/// `compiler X <why> (it has: ...)`: the refusal of a task whose compiler is
/// not among `have`.
pub fn missing_compiler(task: &CompileTask, have: &[CompilerInfo], why: &str) -> GridError {
    let have: Vec<String> = have.iter().map(|c| c.identity.to_string()).collect();
    GridError::InvalidTask(format!(
        "compiler {} {why} (it has: {})",
        task.compiler,
        if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{gcc, gcc_amd64, task_of, worker_info};
    use crate::worker::{Arch, DockerImage};

    fn caps(compilers: &[crate::identity::CompilerIdentity]) -> Capabilities {
        worker_info("w", Arch::Amd64, compilers).capabilities
    }

    #[test]
    fn capabilities_run_their_compilers_and_their_docker_targets() {
        let task = task_of(1);
        assert!(caps(&[gcc_amd64()]).can_run(&task).is_ok());

        let none = caps(&[]);
        let e = none.can_run(&task).expect_err("no compiler");
        assert!(
            e.to_string()
                .contains("not one this worker detected (it has: none)"),
            "{e}"
        );

        let other = caps(&[gcc("aarch64-linux-gnu")]);
        let e = other.can_run(&task).expect_err("another compiler");
        assert!(e.to_string().contains("aarch64-linux-gnu"), "{e}");

        let mut arm_task = task_of(1);
        arm_task.compiler = gcc("aarch64-linux-gnu");
        arm_task.target_arch = Arch::Arm64;
        let mut docker = caps(&[gcc_amd64()]);
        assert!(docker.can_run(&arm_task).is_err());
        docker.docker_images.push(DockerImage {
            arch: Arch::Arm64,
            image: "dockcross/linux-arm64".into(),
        });
        assert!(docker.can_run(&arm_task).is_ok());
    }
}
