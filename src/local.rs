//! `proplet run`: run a module locally with the same runtime and limits as a fleet task.
//!
//! The command line follows the wasmtime CLI's `run` (`[--invoke NAME] [--env K[=V]]... FILE
//! [ARGS]...`), so a proplet can serve as another proplet's external runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::HostApis;
use crate::runtime::{Binary, KvAccess, Runtime, RuntimeError, TaskOutput, TaskSpec};
use crate::sandbox::capabilities::{grant, parse_volumes};
use crate::sandbox::kv::{KvGrant, KvPolicy, Quota};
use crate::sandbox::{
    ConfigRequest, HttpGrant, HttpPolicy, Limits, Mount, MountRequest, ScratchRoot, Volume,
};
use crate::state::kv::KvStore;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// What to call and with what, as a start's `name`, `inputs` and `cli_args`.
    #[command(flatten)]
    pub call: crate::cli::CallArgs,
    /// Mount a host directory or a PROPLET_VOLUMES volume: SOURCE:PATH[:ro|rw] (read-only
    /// unless `rw`).
    #[arg(long = "mount", value_name = "SOURCE:PATH[:MODE]", value_parser = parse_mount)]
    pub mounts: Vec<Mount>,
    /// Environment variable for the guest (repeatable); nothing else is visible to it.
    /// `K` alone passes this process's `K` on (left unset when it is unset), as the
    /// wasmtime CLI does.
    #[arg(long = "env", value_name = "K[=V]", value_parser = parse_env)]
    pub envs: Vec<(String, Option<String>)>,
    /// A configuration value the component reads through `wasi:config/store` (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// An operator value of `PROPLET_CONFIG_DIR` the component may read through
    /// `wasi:config/store` (repeatable).
    #[arg(long = "credential", value_name = "KEY")]
    pub credentials: Vec<String>,
    /// A key-value bucket the component may open through `wasi:keyvalue` (repeatable),
    /// with the quota `PROPLET_KV_BUCKETS` declares for it (1 MiB / 1,000 keys if it
    /// declares none); needs `--kv-store`.
    #[arg(long = "kv", value_name = "BUCKET", requires = "kv_store")]
    pub kv: Vec<String>,
    /// The file the buckets are kept in (a redb database, created if absent; not the
    /// daemon's journal).
    #[arg(long = "kv-store", value_name = "FILE")]
    pub kv_store: Option<PathBuf>,
    /// The module.
    pub file: PathBuf,
    /// Inputs of the export (with --invoke), or the command's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `SOURCE:PATH[:ro|rw]`, where SOURCE is a host directory or a volume of
/// `PROPLET_VOLUMES` (granted within that volume's policy, as for a fleet task). The mode is
/// checked exactly as the daemon checks it.
fn parse_mount(text: &str) -> Result<Mount, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(source), Some(guest)) = (parts.next(), parts.next()) else {
        return Err(format!("expected DIR:PATH[:ro|rw], got {text:?}"));
    };
    let mode = parts.next().map(str::to_owned);
    let volumes = if Path::new(source).is_dir() {
        vec![Volume::open(source, Path::new(source), true)?]
    } else {
        let volumes = parse_volumes(&std::env::var("PROPLET_VOLUMES").unwrap_or_default())?;
        if !volumes.iter().any(|v| v.name == source) {
            return Err(format!(
                "{source} is neither a directory nor a volume of PROPLET_VOLUMES"
            ));
        }
        volumes
    };
    let request = MountRequest {
        volume: source.to_owned(),
        path: guest.to_owned(),
        mode,
    };
    let granted = grant(&volumes, &[request]).map_err(|e| e.to_string())?;
    granted
        .into_iter()
        .next()
        .ok_or_else(|| "nothing granted".to_owned())
}

/// The daemon's compile cache (`PROPLET_CACHE_DIR`, `PROPLET_CACHE_MAX_BYTES` or their
/// defaults), so that a binary compiled once, by either, is not compiled again.
fn compile_cache() -> Result<Option<crate::runtime::DiskCacheConfig>, LocalError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let setting = env("PROPLET_CACHE_DIR");
    let Some(dir) = crate::runtime::resolve_cache_dir(setting.as_deref().map(Path::new), &env)
    else {
        return Ok(None);
    };
    let max_bytes = match env("PROPLET_CACHE_MAX_BYTES") {
        Some(text) => crate::config::parse_bytes(&text)
            .map_err(|e| LocalError::Setting(format!("PROPLET_CACHE_MAX_BYTES: {e}")))?,
        None => 1 << 30,
    };
    Ok(Some(crate::runtime::DiskCacheConfig { dir, max_bytes }))
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// The HTTP grant of a local run: every origin the policy allows (`--http-allow`,
/// `PROPLET_HTTP_ALLOW`), within its budgets.
fn http_grant(policy: HttpPolicy) -> Option<HttpGrant> {
    (!policy.allow.is_empty()).then(|| HttpGrant {
        origins: policy.allow.into(),
        private: policy.private.into(),
        limits: policy.limits,
    })
}

fn parse_env(text: &str) -> Result<(String, Option<String>), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Some(v.to_owned()))),
        None if !text.is_empty() => Ok((text.to_owned(), None)),
        _ => Err(format!("expected K=V or K, got {text:?}")),
    }
}

/// The guest's env: given values, and inherited ones (`--env K`) that are set here.
fn guest_env(envs: Vec<(String, Option<String>)>) -> Result<BTreeMap<String, String>, LocalError> {
    let mut env = BTreeMap::new();
    for (name, value) in envs {
        let value = match value {
            Some(v) => v,
            None => match std::env::var_os(&name) {
                Some(v) => v.into_string().map_err(|_| LocalError::Env(name.clone()))?,
                None => continue,
            },
        };
        env.insert(name, value);
    }
    Ok(env)
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
    /// A setting in the environment is not valid.
    #[error("{0}")]
    Setting(String),
    /// An inherited (`--env K`) variable is not UTF-8.
    #[error("environment variable {0} is not valid UTF-8")]
    Env(String),
    /// The run failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The buckets of `--kv`: with their declared quota, or a default one.
fn kv_access(args: &RunArgs, policy: &KvPolicy) -> Result<Option<KvAccess>, LocalError> {
    let Some(path) = args.kv_store.as_deref().filter(|_| !args.kv.is_empty()) else {
        return Ok(None);
    };
    let fallback = Quota {
        bytes: 1 << 20,
        keys: 1000,
    };
    let buckets = args
        .kv
        .iter()
        .map(|name| {
            let declared = policy.buckets.iter().find(|(b, _)| b == name);
            (name.clone(), declared.map_or(fallback, |(_, q)| *q))
        })
        .collect();
    let store =
        KvStore::open(path).map_err(|e| LocalError::Setting(format!("{}: {e}", path.display())))?;
    Ok(Some(KvAccess {
        grant: KvGrant { buckets },
        store,
    }))
}

/// Runs `args` within `policy` (every origin it allows is granted, credentials are read
/// from its directory, `--kv` buckets get its quotas) and returns the task output.
pub async fn run(args: RunArgs, policy: HostApis) -> Result<TaskOutput, LocalError> {
    let bytes = read(&args.file)?;
    let binary = Binary::new(bytes);
    let kv = kv_access(&args, &policy.kv)?;
    let (name, inputs, argv) = args.call.split(args.args);
    let values = args.vars.into_iter().collect();
    let config = policy
        .config
        .allowing(&args.credentials)
        .grant(&ConfigRequest {
            task: &name,
            digest: &binary.digest,
            values: &values,
            credentials: &args.credentials,
        })
        .map_err(|e| LocalError::Setting(e.to_string()))?;
    let spec = TaskSpec {
        id: "local".into(),
        name,
        binary,
        inputs,
        args: argv,
        env: guest_env(args.envs)?,
        limits: Limits::default(),
        mounts: args.mounts,
        network: Vec::new().into(),
        http: http_grant(policy.http),
        config,
        kv,
        meter: Default::default(),
        echo: true,
    };
    let sandbox = crate::sandbox::SandboxLimits {
        handles: crate::sandbox::descriptors::handles_per_task(1),
        ..Default::default()
    };
    let cache = crate::runtime::CacheLimits {
        entries: 1,
        disk: compile_cache()?,
        ..Default::default()
    };
    let runtime = Runtime::wasmtime(
        cache,
        false,
        sandbox,
        Default::default(),
        Default::default(),
        scratch_root()?,
    );
    Ok(runtime.run(spec, None).await?)
}

/// A scratch root under the system temp directory, removed when this command is done.
fn scratch_root() -> Result<ScratchRoot, LocalError> {
    ScratchRoot::create().map_err(|e| {
        RuntimeError::Internal(format!("cannot create a scratch directory: {e}")).into()
    })
}

/// What `proplet precompile` did with one file.
#[derive(Debug, Clone)]
pub struct Precompiled {
    /// The file.
    pub file: PathBuf,
    /// Its content digest (the cache key).
    pub digest: String,
    /// Whether it was compiled now (else it was in the cache already).
    pub compiled: bool,
    /// How long it took.
    pub took: std::time::Duration,
}

/// Compiles `files` into the compile cache of the daemon `config` describes, with its
/// engine settings (fuel metering changes the compiled code), so that its first task of
/// each binary starts at once: for an image build or a systemd `ExecStartPre=`.
pub async fn precompile(
    files: &[PathBuf],
    config: &crate::Config,
) -> Result<Vec<Precompiled>, LocalError> {
    let disk = config.compile_cache().ok_or_else(|| {
        LocalError::Setting(
            "the compile cache is off: set PROPLET_CACHE_DIR (or HOME, XDG_CACHE_HOME or CACHE_DIRECTORY to default to)".into(),
        )
    })?;
    let cache = crate::runtime::CacheLimits {
        entries: 1,
        disk: Some(disk),
        ..Default::default()
    };
    let metering = config.budgets.metering();
    let engine = crate::runtime::WasmEngine::new(
        cache,
        metering,
        Default::default(),
        Default::default(),
        scratch_root()?,
    );
    let engine = std::sync::Arc::new(engine);
    let mut done = Vec::with_capacity(files.len());
    for file in files {
        let began = std::time::Instant::now();
        let binary = Binary::new(read(file)?);
        let before = engine.compiles();
        engine.prepare(&binary.digest, binary.bytes.clone()).await?;
        done.push(Precompiled {
            file: file.clone(),
            digest: binary.digest.to_string(),
            compiled: engine.compiles() > before,
            took: began.elapsed(),
        });
    }
    Ok(done)
}

fn read(path: &Path) -> Result<Vec<u8>, LocalError> {
    std::fs::read(path).map_err(|source| LocalError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_flags_set_or_inherit_like_the_wasmtime_cli() {
        assert_eq!(parse_env("A=1=2"), Ok(("A".into(), Some("1=2".into()))));
        assert_eq!(parse_env("A"), Ok(("A".into(), None)));
        assert!(parse_env("=1").is_err());
        assert!(parse_env("").is_err());
        let path = std::env::var("PATH").expect("PATH is set in tests");
        let unset = "PROPLET_TEST_SURELY_UNSET_VARIABLE";
        let env = guest_env(vec![
            ("PATH".into(), None),
            (unset.into(), None),
            ("B".into(), Some("2".into())),
        ])
        .expect("utf-8");
        assert_eq!(env.get("PATH"), Some(&path), "inherited");
        assert!(!env.contains_key(unset), "an unset variable stays unset");
        assert_eq!(env.get("B").map(String::as_str), Some("2"));
    }
}
