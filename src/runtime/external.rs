//! An external runtime binary as a subprocess (`PROPLET_EXTERNAL_WASM_RUNTIME`; the
//! command line below is the upstream proplet's, so the same runtimes work).
//!
//! The binary is written to a private temp file that is removed when the run ends, however
//! it ends. The command line is the one upstream uses with the wasmtime CLI, except that
//! env values travel in the environment rather than on the command line ([`argv`]):
//!
//! ```text
//! <runtime> run [--invoke NAME] <cli_args…> --env K… <file> [inputs…]
//! ```
//!
//! Components get `--invoke 'name(in1, in2)'` (WAVE call syntax) and no positional inputs.
//! `cli_args` outside the allow-list of [`argv`] and reserved env names are refused
//! (`invalid`) before anything starts. The child's environment is `PATH` and `HOME` of the
//! proplet plus the task's env, nothing else. Stdout (capped) is the result; a non-zero
//! exit is an error carrying stderr.
//!
//! The child leads its own process group, and the whole group is killed when the run ends:
//! at the deadline, on stop or shutdown (the run is dropped), on an output overflow, and
//! after a normal exit (a grandchild left behind must not outlive its task). The group
//! runs under OS limits: a data segment of the memory budget plus an allowance, and CPU
//! seconds — just past the deadline, or for a task without one (a daemon) the node's
//! longest deadline ([`ExternalRuntime::with_cpu_limit`]).

mod argv;
mod options;

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tracing::warn;

use super::{GuestOutput, RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::CappedOutput;

/// Environment variables of the proplet that the runtime process may see.
const PASSED_ENV: [&str; 2] = ["PATH", "HOME"];

/// Runs tasks with an external runtime binary.
pub struct ExternalRuntime {
    program: PathBuf,
    workdir: PathBuf,
    /// CPU time of a task that has no deadline (daemons); `None`: unlimited.
    cpu_limit: Option<Duration>,
}

impl From<options::Refused> for RuntimeError {
    fn from(e: options::Refused) -> Self {
        RuntimeError::Invalid(format!("refused for the external runtime: {e}"))
    }
}

impl ExternalRuntime {
    /// A runtime that executes `program`, with temp files under `workdir`.
    pub fn new(program: PathBuf, workdir: PathBuf) -> Self {
        ExternalRuntime {
            program,
            workdir,
            cpu_limit: None,
        }
    }

    /// Caps the CPU time of tasks that have no deadline (daemons) at `limit`, enforced by
    /// the kernel (`RLIMIT_CPU`); the worker passes the node's longest deadline
    /// (`PROPLET_TASK_TIMEOUT_MAX`). `None` leaves them unlimited.
    pub fn with_cpu_limit(mut self, limit: Option<Duration>) -> Self {
        self.cpu_limit = limit;
        self
    }

    /// The runtime binary.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Runs one task.
    pub async fn run(
        &self,
        spec: &TaskSpec,
        started: Option<oneshot::Sender<()>>,
    ) -> Result<TaskOutput, RuntimeError> {
        argv::check(spec)?;
        let limits = OsLimits::of(spec, self.cpu_limit);
        let file = self.write_binary(spec).await?;
        let mut cmd = self.command(spec, file.path(), limits);
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::Internal(format!(
                "cannot start external runtime {}: {e}",
                self.program.display()
            ))
        })?;
        // Declared after `child`, so dropped (killing the group) before the child is reaped.
        let mut group = ProcessGroup::of(&child);
        if let Some(tx) = started {
            tx.send(()).ok();
        }
        let stdout = CappedOutput::new(spec.limits.output_bytes, spec.meter.clone());
        let stderr = CappedOutput::new(spec.limits.output_bytes, spec.meter.clone());
        let status = supervise(&mut child, &mut group, &stdout, &stderr).await;
        let status = status
            .map_err(|e| RuntimeError::Internal(format!("waiting for external runtime: {e}")))?;
        if stdout.overflowed() || stderr.overflowed() {
            return Err(RuntimeError::OutputLimit(spec.limits.output_bytes));
        }
        outcome(status, &stdout, &stderr, limits)
    }

    async fn write_binary(&self, spec: &TaskSpec) -> Result<tempfile::NamedTempFile, RuntimeError> {
        let dir = self.workdir.clone();
        let bytes = spec.binary.bytes.clone();
        let prefix = format!("proplet_{}_", sanitize(&spec.id));
        let job =
            tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::NamedTempFile> {
                std::fs::create_dir_all(&dir)?;
                let mut file = tempfile::Builder::new()
                    .prefix(&prefix)
                    .suffix(".wasm")
                    .tempfile_in(&dir)?;
                std::io::Write::write_all(&mut file, &bytes)?;
                Ok(file)
            });
        job.await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| {
                RuntimeError::Internal(format!(
                    "cannot write the binary for the external runtime: {e}"
                ))
            })
    }

    fn command(&self, spec: &TaskSpec, file: &Path, limits: OsLimits) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(argv::arguments(spec, file, spec.binary.is_component()));
        cmd.env_clear();
        for name in PASSED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        // Read by the runtime through `--env NAME`; never on the command line.
        cmd.envs(&spec.env);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setrlimit(2), which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(move || limits.apply());
        }
        cmd
    }
}

/// Waits for the runtime while draining its output; kills its process group on an output
/// overflow and once the runtime has exited, so that no grandchild keeps a pipe open.
async fn supervise(
    child: &mut Child,
    group: &mut ProcessGroup,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
) -> std::io::Result<ExitStatus> {
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let drains = async { tokio::join!(drain(out_pipe, stdout), drain(err_pipe, stderr)) };
    tokio::pin!(drains);
    let mut drained = false;
    let status = tokio::select! {
        status = child.wait() => status,
        _ = &mut drains => {
            drained = true;
            if stdout.overflowed() || stderr.overflowed() {
                // Over budget: the child would block on a full pipe; end it now.
                group.kill();
            }
            child.wait().await
        }
    };
    group.kill();
    if !drained {
        drains.await;
    }
    status
}

/// The task's result from the runtime's exit status and output.
fn outcome(
    status: ExitStatus,
    stdout: &CappedOutput,
    stderr: &CappedOutput,
    limits: OsLimits,
) -> Result<TaskOutput, RuntimeError> {
    match (status.code(), status.signal(), limits.cpu_secs) {
        (Some(0), _, _) => Ok(TaskOutput {
            result: stdout.text(),
            stderr: stderr.text(),
            from_stdout: true,
        }),
        (Some(code), _, _) => Err(RuntimeError::Exit {
            code,
            output: GuestOutput {
                stdout: stdout.text(),
                stderr: stderr.text(),
            },
        }),
        (None, Some(sig), Some(secs)) if sig == rustix::process::Signal::XCPU.as_raw() => {
            Err(RuntimeError::Timeout(Duration::from_secs(secs)))
        }
        (None, _, _) => Err(RuntimeError::Trap {
            message: format!("external runtime killed by a signal ({status})"),
            output: GuestOutput {
                stdout: stdout.text(),
                stderr: stderr.text(),
            },
        }),
    }
}

/// The runtime's process group (the child leads it): killed whole with `SIGKILL` when the
/// run ends, however it ends. A member that leaves the group on purpose (`setsid`) escapes
/// this; the service's cgroup (`KillMode=` in the systemd unit) catches it at stop.
struct ProcessGroup(Option<rustix::process::Pid>);

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        ProcessGroup(pid)
    }

    /// Kills every process still in the group; the first call only. While the leader is
    /// unreaped or any member lives, the kernel keeps the group id from being reused.
    fn kill(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        match rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => {
                warn!(pgid = pgid.as_raw_pid(), error = %e, "cannot kill the external runtime's process group")
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Room for the external runtime's own code and compiler on top of the guest's memory.
const RUNTIME_ALLOWANCE: u64 = 64 << 20;

/// Kernel limits for the runtime process (inherited by anything it starts): a data segment
/// of the task's memory budget plus [`RUNTIME_ALLOWANCE`], and CPU seconds: just past the
/// deadline as a second wall behind the kill at the deadline, or for a task without a
/// deadline the runtime's CPU limit.
#[derive(Debug, Clone, Copy)]
struct OsLimits {
    data: u64,
    cpu_secs: Option<u64>,
}

impl OsLimits {
    fn of(spec: &TaskSpec, no_deadline_cpu: Option<Duration>) -> Self {
        let cpu_secs = match spec.limits.timeout {
            Some(deadline) => Some(deadline.as_secs() + 2),
            None => no_deadline_cpu
                .map(|cpu| (cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0)).max(1)),
        };
        OsLimits {
            data: spec.limits.memory_bytes.saturating_add(RUNTIME_ALLOWANCE),
            cpu_secs,
        }
    }

    fn apply(self) -> std::io::Result<()> {
        rlimit::setrlimit(rlimit::Resource::DATA, self.data, self.data)?;
        if let Some(secs) = self.cpu_secs {
            rlimit::setrlimit(rlimit::Resource::CPU, secs, secs + 1)?;
        }
        Ok(())
    }
}

/// Copies a pipe into `sink` until EOF or until the sink refuses more.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, sink: &CappedOutput) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if sink.write_bytes(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Keeps task ids from steering temp file names anywhere.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_the_temp_dir() {
        assert_eq!(sanitize("../../etc/x"), "______etc_x");
    }
}
