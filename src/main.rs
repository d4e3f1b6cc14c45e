//! The `proplet` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use proplet::cli::{Cli, Cmd};
use proplet::{Config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Daemon) {
        Cmd::Demo => report(demo().await),
        Cmd::Run(args) => {
            let env = |name: &str| std::env::var(name).ok();
            let file = cli.config.as_deref();
            let flags = cli.settings.0;
            match Config::host_apis(file, &env, flags) {
                Ok(policy) => run_local(args, policy).await,
                Err(e) => report(Err(e.into())),
            }
        }
        Cmd::Submit(args) => {
            match Config::from_process_env(cli.config.as_deref(), cli.settings.0) {
                Ok(config) => submit(args, &config).await,
                Err(e) => report(Err(e.into())),
            }
        }
        Cmd::New { name, lang, dir } => report(new_project(&name, lang, &dir)),
        Cmd::Precompile { files } => {
            match Config::from_process_env(cli.config.as_deref(), cli.settings.0) {
                Ok(config) => report(precompile(&files, &config).await),
                Err(e) => report(Err(e.into())),
            }
        }
        Cmd::Wit { dir: None } => {
            print!("{}", proplet::scaffold::WIT);
            ExitCode::SUCCESS
        }
        Cmd::Wit { dir: Some(dir) } => {
            report(proplet::scaffold::write_wit(&dir).map_err(Into::into))
        }
        Cmd::Inspect { file, all } => report(inspect(&file, all)),
        Cmd::Keygen { secret } => report(keygen(&secret)),
        Cmd::Sign { key, file } => report(sign(&key, &file)),
        Cmd::Config => match Config::from_process_env(cli.config.as_deref(), cli.settings.0) {
            Ok(config) => {
                print!("{}", config.render());
                ExitCode::SUCCESS
            }
            Err(e) => report(Err(e.into())),
        },
        Cmd::Daemon => {
            let config = match Config::from_process_env(cli.config.as_deref(), cli.settings.0) {
                Ok(config) => config,
                Err(e) => return report(Err(e.into())),
            };
            let proplet_id = config.identity.proplet_id.clone();
            let telemetry = match telemetry::init(&config.log, &config.otel, &proplet_id) {
                Ok(telemetry) => telemetry,
                Err(e) => return report(Err(e.into())),
            };
            let outcome = proplet::run(config, shutdown_signal()).await;
            telemetry.shutdown().await;
            report(outcome.map_err(Into::into))
        }
    }
}

/// `proplet demo`: the embedded broker, two proplets and sample tasks.
#[cfg(feature = "demo")]
async fn demo() -> anyhow::Result<()> {
    proplet::demo::run().await
}

/// `proplet demo` in a build without the `demo` feature (a device build).
#[cfg(not(feature = "demo"))]
async fn demo() -> anyhow::Result<()> {
    anyhow::bail!(
        "this proplet was built without the demo and its embedded broker (cargo feature \
         `demo`); run `cargo run -- demo` from the source tree, or rebuild with `--features demo`"
    )
}

/// `proplet run`: the result on stdout, guest stderr on stderr, the guest's exit status.
async fn run_local(args: proplet::local::RunArgs, policy: proplet::config::HostApis) -> ExitCode {
    use proplet::local::LocalError;
    use proplet::runtime::RuntimeError;
    // Guest log lines (the WIT `log` interface) go to stderr; RUST_LOG can change that.
    let log = proplet::config::LogSettings {
        level: "warn,guest=trace".into(),
        json: false,
    };
    if let Err(e) = telemetry::init(&log, &proplet::config::OtelSettings::default(), "local") {
        return report(Err(e.into()));
    }
    // The guest's stdout and stderr were copied out as it wrote them (as the wasmtime CLI
    // does); what remains is a returned value, the exit status, or why it failed.
    match proplet::local::run(args, policy).await {
        Ok(out) => {
            if !out.from_stdout {
                print!("{}", out.result);
                if !out.result.is_empty() && !out.result.ends_with('\n') {
                    println!();
                }
            }
            ExitCode::SUCCESS
        }
        Err(LocalError::Runtime(RuntimeError::Exit { code, .. })) => {
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(LocalError::Runtime(e)) => report(Err(e.without_output().into())),
        Err(e) => report(Err(e.into())),
    }
}

/// `proplet submit`: the result on stdout (or the whole message with `--json`); a failed
/// task's error on stderr and exit status 1.
async fn submit(args: proplet::submit::SubmitArgs, config: &Config) -> ExitCode {
    let json = args.json;
    let answer = match proplet::submit::run(args, config).await {
        Ok(answer) => answer,
        Err(e) => return report(Err(e.into())),
    };
    if json {
        println!("{}", answer.0);
    } else if answer.failed() {
        eprintln!("{}", answer.error());
    } else {
        println!("{}", answer.results());
    }
    match answer.failed() {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    }
}

/// `proplet precompile`: one line per file.
async fn precompile(files: &[std::path::PathBuf], config: &Config) -> anyhow::Result<()> {
    for done in proplet::local::precompile(files, config).await? {
        let what = match done.compiled {
            true => format!("compiled in {:.2?}", done.took),
            false => "already in the cache".to_owned(),
        };
        println!("{}: {} {what}", done.file.display(), done.digest);
    }
    Ok(())
}

/// `proplet new`: the project, and what to do next.
fn new_project(
    name: &str,
    lang: proplet::scaffold::Lang,
    parent: &std::path::Path,
) -> anyhow::Result<()> {
    let dir = proplet::scaffold::create(name, lang, parent)?;
    println!("Created {}. Next:", dir.display());
    println!("  cd {}", dir.display());
    println!("  just test         # unit tests, then the component end to end");
    println!("  just run 40 2     # run it locally: sum=42");
    println!("  just submit 40 2  # send it to a proplet through the broker");
    Ok(())
}

/// `proplet inspect`: describe a binary.
fn inspect(file: &std::path::Path, all: bool) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let found = proplet::runtime::inspect(&bytes)?;
    let found = if all { found.with_internals() } else { found };
    print!("{found}");
    Ok(())
}

/// `proplet keygen`: the public key on stdout.
fn keygen(secret: &std::path::Path) -> anyhow::Result<()> {
    println!("{}", proplet::keys::keygen(secret)?);
    Ok(())
}

/// `proplet sign`: the start fields as JSON on stdout.
fn sign(key: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let signed = proplet::keys::sign(key, file)?;
    let fields = serde_json::json!({"digest": signed.digest, "signature": signed.signature});
    println!("{fields}");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("proplet: cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proplet: {e:#}");
            ExitCode::from(2)
        }
    }
}
