//! The command line: subcommands plus one `--flag` per setting, generated from the
//! settings table so that flags, environment and TOML keys never drift apart.

use std::path::PathBuf;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches, Parser, Subcommand};

use crate::config::{SETTINGS, Setting};

/// `proplet`: the Propeller worker daemon.
#[derive(Debug, Parser)]
#[command(
    name = "proplet",
    version,
    about = "Propeller worker: runs WebAssembly tasks received over MQTT"
)]
pub struct Cli {
    /// TOML file with settings (top-level keys, or a `[proplet]` section); also PROPLET_CONFIG_FILE.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Settings given as flags; they override the file and the environment.
    #[command(flatten)]
    pub settings: SettingFlags,
    /// What to do; without a subcommand, run the daemon.
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon (the default).
    Daemon,
    /// Print the effective configuration, secrets redacted, with where each value came from.
    Config,
    /// Run a self-contained demo: an embedded broker, a worker and a few sample tasks
    /// (builds with the `demo` cargo feature, the default).
    Demo,
    /// Run a module or component locally, as a task would run (wasmtime-CLI compatible).
    Run(crate::local::RunArgs),
    /// Create a workload project: the WIT this proplet speaks, pinned binding generators,
    /// a justfile (build, run, submit, test) and a test.
    New {
        /// The project's name (and directory).
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// Where to create it.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Compile binaries into the compile cache (PROPLET_CACHE_DIR) with the daemon's engine
    /// settings, so that their first task starts at once (an image build, ExecStartPre=).
    Precompile {
        /// Modules or components.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the WIT this proplet speaks (`propeller:proplet`), to vendor into a project;
    /// with `--dir`, write it and the WASI interfaces it imports (`wit/deps/`) there.
    Wit {
        /// Write `wit/proplet.wit` and `wit/deps/…` under this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Send a task to a proplet through the broker, as the manager would, and print its
    /// result (exit status 1 when the task failed).
    Submit(crate::submit::SubmitArgs),
    /// Show what a binary is: its kind, imports, exports with types, and the capabilities
    /// it would need.
    Inspect {
        /// The module or component.
        file: std::path::PathBuf,
        /// Also list exports that binding generators add for their own use.
        #[arg(long)]
        all: bool,
    },
    /// Create an ed25519 signing key (file mode 0600) and print its public key for
    /// PROPLET_TRUSTED_KEYS.
    Keygen {
        /// Where to write the secret key; an existing file is never overwritten.
        secret: std::path::PathBuf,
    },
    /// Print a binary's digest and signature, as the start fields `digest` and `signature`.
    Sign {
        /// The secret key made by `proplet keygen`.
        #[arg(long)]
        key: std::path::PathBuf,
        /// The module or component.
        file: std::path::PathBuf,
    },
}

/// What a task calls and with what: the flags `proplet run` and `proplet submit` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CallArgs {
    /// Export to call (a start's `name`); without it the binary runs as a WASI command or
    /// a workload.
    #[arg(long, value_name = "NAME")]
    pub invoke: Option<String>,
    /// An input of the export (repeatable; WAVE for components), a start's `inputs`.
    #[arg(long = "input", value_name = "V")]
    pub inputs: Vec<String>,
    /// An argument for the guest (repeatable), a start's `cli_args`.
    #[arg(long = "arg", value_name = "A")]
    pub guest_args: Vec<String>,
}

impl CallArgs {
    /// The export's name, its inputs and the guest's arguments, given the trailing words
    /// of the command line: inputs with `--invoke`, arguments without (as the wasmtime
    /// CLI reads them). Flags come after them.
    pub fn split(self, trailing: Vec<String>) -> (String, Vec<String>, Vec<String>) {
        let (name, mut inputs, mut args) = match self.invoke {
            Some(name) => (name, trailing, Vec::new()),
            None => (String::new(), Vec::new(), trailing),
        };
        inputs.extend(self.inputs);
        args.extend(self.guest_args);
        (name, inputs, args)
    }
}

/// The `--<setting>` flags that were given.
#[derive(Debug, Clone, Default)]
pub struct SettingFlags(pub Vec<(&'static Setting, String)>);

impl Args for SettingFlags {
    fn augment_args(cmd: Command) -> Command {
        let args = SETTINGS.iter().map(|s| {
            let help = format!("{} [env: {}]", s.help, s.env.join(", "));
            Arg::new(s.key)
                .long(s.flag)
                .value_name("VALUE")
                .help(help)
                .global(true)
                .help_heading("Settings")
        });
        cmd.args(args)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = SETTINGS
            .iter()
            .filter_map(|s| matches.get_one::<String>(s.key).map(|v| (*s, v.clone())))
            .collect();
        Ok(SettingFlags(flags))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_flags_are_parsed() {
        let cli = Cli::try_parse_from(["proplet", "--mqtt-qos", "1", "config", "--entity-id", "e"])
            .expect("parses");
        let keys: Vec<_> = cli
            .settings
            .0
            .iter()
            .map(|(s, v)| (s.key, v.as_str()))
            .collect();
        assert_eq!(keys, [("entity_id", "e"), ("mqtt_qos", "1")]);
        assert!(matches!(cli.command, Some(Cmd::Config)));
    }

    #[test]
    fn unknown_flags_are_errors() {
        assert!(Cli::try_parse_from(["proplet", "--mqtt-qoss", "1"]).is_err());
    }
}
