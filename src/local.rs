//! `proplet run`: run a module locally with the same runtime and limits as a fleet task.
//!
//! The command line follows the wasmtime CLI's `run` (`[--invoke NAME] [--env K=V]... FILE
//! [ARGS]...`), so a proplet can serve as another proplet's external runtime.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::runtime::{Binary, Runtime, RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::{Limits, Mount};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Export to call; without it the module runs as a WASI command (or a workload).
    #[arg(long, value_name = "NAME")]
    pub invoke: Option<String>,
    /// An input of the export (repeatable; WAVE for components), like a start's `inputs`.
    #[arg(long = "input", value_name = "V")]
    pub inputs: Vec<String>,
    /// An argument for the guest (repeatable), like a start's `cli_args`.
    #[arg(long = "arg", value_name = "A")]
    pub guest_args: Vec<String>,
    /// Mount a host directory: DIR:PATH[:ro|rw] (read-only unless `rw`).
    #[arg(long = "mount", value_name = "DIR:PATH[:MODE]", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// Environment variable for the guest (repeatable); nothing else is visible to it.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,
    /// The module.
    pub file: PathBuf,
    /// Inputs of the export (with --invoke), or the command's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn parse_mount(text: &str) -> Result<Mount, String> {
    let (spec, writable) = match text.rsplit_once(':') {
        Some((rest, "rw")) => (rest, true),
        Some((rest, "ro")) => (rest, false),
        _ => (text, false),
    };
    let (dir, guest) = spec
        .split_once(':')
        .ok_or_else(|| format!("expected DIR:PATH[:ro|rw], got {text:?}"))?;
    if !std::path::Path::new(dir).is_dir() {
        return Err(format!("{dir} is not a directory"));
    }
    if !guest.starts_with('/') {
        return Err(format!("the guest path {guest:?} must be absolute"));
    }
    Ok(Mount {
        host: PathBuf::from(dir),
        guest: guest.to_owned(),
        writable,
    })
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected K=V, got {text:?}"))
}

/// Why a local run failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The run failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Runs `args` and returns the task output.
pub async fn run(args: RunArgs) -> Result<TaskOutput, LocalError> {
    let bytes = std::fs::read(&args.file).map_err(|source| LocalError::Read {
        path: args.file.clone(),
        source,
    })?;
    let (name, mut inputs, mut argv) = match args.invoke {
        Some(name) => (name, args.args, Vec::new()),
        None => (String::new(), Vec::new(), args.args),
    };
    inputs.extend(args.inputs);
    argv.extend(args.guest_args);
    let spec = TaskSpec {
        id: "local".into(),
        name,
        binary: Binary::new(bytes),
        inputs,
        args: argv,
        env: args.envs.into_iter().collect::<BTreeMap<_, _>>(),
        limits: Limits::default(),
        mounts: args.mounts,
        network: Vec::new().into(),
    };
    let runtime = Runtime::wasmtime(1)?;
    Ok(runtime.run(spec, None).await?)
}
