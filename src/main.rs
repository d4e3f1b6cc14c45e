//! The `proplet` binary: parse the command line, load the configuration, run.

use std::process::ExitCode;

use clap::Parser;
use proplet::cli::{Cli, Cmd};
use proplet::{Config, demo, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Daemon) {
        Cmd::Demo => report(demo::run().await),
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
            telemetry::init(&config.log);
            report(
                proplet::run(config, shutdown_signal())
                    .await
                    .map_err(Into::into),
            )
        }
    }
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
