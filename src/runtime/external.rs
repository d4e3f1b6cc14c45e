//! An external runtime binary as a subprocess (`PROPLET_EXTERNAL_WASM_RUNTIME`,
//! PROTOCOL.md §5.3 "H, external").
//!
//! The binary is written to a private temp file that is removed when the run ends, however
//! it ends. The command line is the one upstream uses with the wasmtime CLI:
//!
//! ```text
//! <runtime> run [--invoke NAME] <cli_args…> --env K=V… <file> [inputs…]
//! ```
//!
//! Components get `--invoke 'name(in1, in2)'` (WAVE call syntax) and no positional inputs.
//! The child sees only `PATH` and `HOME` of the proplet's environment; the task's env goes
//! to the guest through `--env`. Stdout (capped) is the result; a non-zero exit is an error
//! carrying stderr. The child is killed if the run is dropped (stop, timeout, shutdown).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::oneshot;

use super::{RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::CappedOutput;

/// Environment variables of the proplet that the runtime process may see.
const PASSED_ENV: [&str; 2] = ["PATH", "HOME"];

/// Runs tasks with an external runtime binary.
pub struct ExternalRuntime {
    program: PathBuf,
    workdir: PathBuf,
}

impl ExternalRuntime {
    /// A runtime that executes `program`, with temp files under `workdir`.
    pub fn new(program: PathBuf, workdir: PathBuf) -> Self {
        ExternalRuntime { program, workdir }
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
        let file = self.write_binary(spec).await?;
        let mut child = self.command(spec, file.path()).spawn().map_err(|e| {
            RuntimeError::Internal(format!(
                "cannot start external runtime {}: {e}",
                self.program.display()
            ))
        })?;
        if let Some(tx) = started {
            tx.send(()).ok();
        }
        let stdout = CappedOutput::new(spec.limits.output_bytes, spec.meter.clone());
        let stderr = CappedOutput::new(spec.limits.output_bytes, spec.meter.clone());
        let out_pipe = child.stdout.take();
        let err_pipe = child.stderr.take();
        let drains = async { tokio::join!(drain(out_pipe, &stdout), drain(err_pipe, &stderr)) };
        tokio::pin!(drains);
        let status = tokio::select! {
            status = child.wait() => {
                drains.await;
                status
            }
            _ = &mut drains => {
                if stdout.overflowed() || stderr.overflowed() {
                    // Over budget: the child would block on a full pipe; end it now.
                    child.start_kill().ok();
                }
                child.wait().await
            }
        };
        let status = status
            .map_err(|e| RuntimeError::Internal(format!("waiting for external runtime: {e}")))?;
        if stdout.overflowed() || stderr.overflowed() {
            return Err(RuntimeError::OutputLimit(spec.limits.output_bytes));
        }
        match status.code() {
            Some(0) => Ok(TaskOutput {
                result: stdout.text(),
                stderr: stderr.text(),
            }),
            Some(code) => Err(RuntimeError::Exit {
                code,
                stderr: stderr.text(),
            }),
            None => Err(RuntimeError::Trap(format!(
                "external runtime killed by a signal ({status})"
            ))),
        }
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

    fn command(&self, spec: &TaskSpec, file: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(arguments(spec, file, spec.binary.is_component()));
        cmd.env_clear();
        for name in PASSED_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = OsLimits::of(spec);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // setrlimit(2), which is async-signal-safe and allocates nothing.
        unsafe {
            cmd.pre_exec(move || limits.apply());
        }
        cmd
    }
}

/// Room for the external runtime's own code and compiler on top of the guest's memory.
const RUNTIME_ALLOWANCE: u64 = 64 << 20;

/// Kernel limits for the runtime process (inherited by anything it starts): a data segment
/// of the task's memory budget plus [`RUNTIME_ALLOWANCE`], and CPU seconds just past the
/// deadline as a second wall behind the kill at the deadline.
#[derive(Debug, Clone, Copy)]
struct OsLimits {
    data: u64,
    cpu_secs: Option<u64>,
}

impl OsLimits {
    fn of(spec: &TaskSpec) -> Self {
        OsLimits {
            data: spec.limits.memory_bytes.saturating_add(RUNTIME_ALLOWANCE),
            cpu_secs: spec.limits.timeout.map(|t| t.as_secs() + 2),
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

/// The runtime's argv after the program name.
fn arguments(spec: &TaskSpec, file: &Path, component: bool) -> Vec<String> {
    let mut argv = vec!["run".to_owned()];
    let invoke = !spec.is_command()
        && !spec
            .args
            .iter()
            .any(|a| a == "--invoke" || a.starts_with("--invoke="));
    if invoke {
        argv.push("--invoke".into());
        argv.push(if component {
            format!("{}({})", spec.name, spec.inputs.join(", "))
        } else {
            spec.name.clone()
        });
    }
    argv.extend(spec.args.iter().cloned());
    for (k, v) in &spec.env {
        argv.push("--env".into());
        argv.push(format!("{k}={v}"));
    }
    argv.push(file.display().to_string());
    if !(invoke && component) {
        argv.extend(spec.inputs.iter().cloned());
    }
    argv
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
    use crate::runtime::Binary;
    use crate::sandbox::Limits;

    fn spec(name: &str, args: &[&str]) -> TaskSpec {
        TaskSpec {
            id: "t".into(),
            name: name.into(),
            binary: Binary::new(vec![]),
            inputs: vec!["10".into(), "20".into()],
            args: args.iter().map(|s| s.to_string()).collect(),
            env: [("A".to_string(), "1".to_string())].into(),
            limits: Limits::default(),
            mounts: vec![],
            network: Vec::new().into(),
            meter: Default::default(),
        }
    }

    #[test]
    fn core_export_gets_invoke_and_positional_inputs() {
        let argv = arguments(&spec("add", &["-W", "x"]), Path::new("/t/f.wasm"), false);
        assert_eq!(
            argv,
            [
                "run",
                "--invoke",
                "add",
                "-W",
                "x",
                "--env",
                "A=1",
                "/t/f.wasm",
                "10",
                "20"
            ]
        );
    }

    #[test]
    fn component_export_uses_wave_call_syntax() {
        let argv = arguments(&spec("add", &[]), Path::new("/f.wasm"), true);
        assert_eq!(
            argv,
            ["run", "--invoke", "add(10, 20)", "--env", "A=1", "/f.wasm"]
        );
    }

    #[test]
    fn commands_and_explicit_invoke_add_nothing() {
        let argv = arguments(&spec("_start", &[]), Path::new("/f.wasm"), false);
        assert_eq!(argv, ["run", "--env", "A=1", "/f.wasm", "10", "20"]);
        let argv = arguments(
            &spec("add", &["--invoke", "mul"]),
            Path::new("/f.wasm"),
            false,
        );
        assert_eq!(
            argv,
            [
                "run", "--invoke", "mul", "--env", "A=1", "/f.wasm", "10", "20"
            ]
        );
    }

    #[test]
    fn ids_cannot_escape_the_temp_dir() {
        assert_eq!(sanitize("../../etc/x"), "______etc_x");
    }
}
