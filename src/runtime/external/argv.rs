//! The external runtime's command line, and what a task may put on it.
//!
//! The binary that passed admission must be the binary that runs, and the runtime must
//! grant the guest nothing beyond what proplet itself would: a task's `cli_args` may hold
//! only the wasmtime CLI options of an allow-list ([`check_cli_args`], `options.rs`), and
//! an export name is never read as an option.
//!
//! The task's env never appears on the command line (other users can read
//! `/proc/<pid>/cmdline`): the runtime gets `--env NAME` and the value in its own
//! environment, which the wasmtime CLI passes on to the guest ("`--env FOO` … will cause
//! the environment variable `FOO` to be inherited"; `src/common.rs`). Because the runtime
//! process itself now sees those variables, names that its loader, libc, a wrapper script
//! or the runtime would act on ([`check_env`]) are refused.

use std::collections::BTreeMap;
use std::path::Path;

use super::options::{Refused, check_cli_args};
use crate::runtime::TaskSpec;

/// Names that the dynamic loader, libc, a shell or interpreter wrapper, Rust's standard
/// library or Wasmtime read from their own environment.
const RESERVED_NAMES: &[&str] = &[
    "BASHOPTS",
    "CDPATH",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLOBIGNORE",
    "HOME",
    "HOSTALIASES",
    "IFS",
    "LANG",
    "LANGUAGE",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "PATH",
    "PROMPT_COMMAND",
    "PS4",
    "RES_OPTIONS",
    "RESOLV_HOST_CONF",
    "SHELLOPTS",
    "TMPDIR",
    "TZDIR",
];

/// Prefixes of reserved names (see [`RESERVED_NAMES`]).
const RESERVED_PREFIXES: &[&str] = &[
    "BASH_",
    "DYLD_",
    "GLIBC_",
    "LC_",
    "LD_",
    "MALLOC_",
    "NODE_",
    "PERL",
    "PYTHON",
    "RUBY",
    "RUST_",
    "WASMTIME_",
    "XDG_",
];

/// Checks that every env entry can be handed to the runtime through its environment.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), Refused> {
    for (name, value) in env {
        let mut chars = name.chars();
        let portable = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !portable {
            return Err(Refused::EnvName(name.clone()));
        }
        if RESERVED_NAMES.contains(&name.as_str())
            || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return Err(Refused::EnvReserved(name.clone()));
        }
        if value.contains('\0') {
            return Err(Refused::EnvValue(name.clone()));
        }
    }
    Ok(())
}

/// Checks everything of `spec` that goes to the runtime: `cli_args`, env, the export name.
pub fn check(spec: &TaskSpec) -> Result<(), Refused> {
    check_cli_args(&spec.args)?;
    check_env(&spec.env)?;
    if adds_invoke(spec) && spec.name.starts_with('-') {
        return Err(Refused::Export(spec.name.clone()));
    }
    Ok(())
}

/// Whether proplet adds `--invoke`: an export is called and `cli_args` name none.
fn adds_invoke(spec: &TaskSpec) -> bool {
    !spec.is_command()
        && !spec
            .args
            .iter()
            .any(|a| a == "--invoke" || a.starts_with("--invoke="))
}

/// The runtime's argv after the program name, for a `spec` that passed [`check`]:
/// `run [--invoke NAME] <cli_args…> --env NAME… <file> [inputs…]`.
pub fn arguments(spec: &TaskSpec, file: &Path, component: bool) -> Vec<String> {
    let mut argv = vec!["run".to_owned()];
    let invoke = adds_invoke(spec);
    if invoke {
        argv.push("--invoke".into());
        argv.push(if component {
            format!("{}({})", spec.name, spec.inputs.join(", "))
        } else {
            spec.name.clone()
        });
    }
    argv.extend(spec.args.iter().cloned());
    for name in spec.env.keys() {
        argv.push("--env".into());
        argv.push(name.clone());
    }
    argv.push(file.display().to_string());
    if !(invoke && component) {
        argv.extend(spec.inputs.iter().cloned());
    }
    argv
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
            http: None,
            config: Default::default(),
            kv: None,
            meter: Default::default(),
            echo: false,
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn core_export_gets_invoke_and_positional_inputs() {
        let argv = arguments(
            &spec("add", &["-W", "max-memory-size=65536"]),
            Path::new("/t/f.wasm"),
            false,
        );
        let want = [
            "run",
            "--invoke",
            "add",
            "-W",
            "max-memory-size=65536",
            "--env",
            "A",
            "/t/f.wasm",
            "10",
            "20",
        ];
        assert_eq!(argv, args(&want));
    }

    #[test]
    fn component_export_uses_wave_call_syntax() {
        let argv = arguments(&spec("add", &[]), Path::new("/f.wasm"), true);
        let want = ["run", "--invoke", "add(10, 20)", "--env", "A", "/f.wasm"];
        assert_eq!(argv, args(&want));
    }

    #[test]
    fn commands_and_explicit_invoke_add_nothing() {
        let argv = arguments(&spec("_start", &[]), Path::new("/f.wasm"), false);
        let want = ["run", "--env", "A", "/f.wasm", "10", "20"];
        assert_eq!(argv, args(&want));
        let argv = arguments(
            &spec("add", &["--invoke", "mul"]),
            Path::new("/f.wasm"),
            false,
        );
        let want = [
            "run", "--invoke", "mul", "--env", "A", "/f.wasm", "10", "20",
        ];
        assert_eq!(argv, args(&want));
    }

    #[test]
    fn env_values_never_reach_the_command_line() {
        let mut s = spec("add", &[]);
        s.env.insert("TOKEN".into(), "hunter2".into());
        assert_eq!(check(&s), Ok(()));
        let argv = arguments(&s, Path::new("/f.wasm"), false);
        assert!(argv.iter().all(|a| !a.contains("hunter2")), "{argv:?}");
        assert!(argv.windows(2).any(|w| w == ["--env", "TOKEN"]));
    }

    #[test]
    fn an_export_name_cannot_become_an_option() {
        let refused = check(&spec("--dir=/", &[]));
        assert_eq!(refused, Err(Refused::Export("--dir=/".into())));
        assert_eq!(check(&spec("--dir=/", &["--invoke", "add"])), Ok(()));
    }

    #[test]
    fn env_names_the_runtime_would_act_on_are_refused() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        for name in [
            "LD_PRELOAD",
            "PATH",
            "HOME",
            "BASH_ENV",
            "GLIBC_TUNABLES",
            "RUST_MIN_STACK",
        ] {
            assert_eq!(
                check_env(&env(name, "x")),
                Err(Refused::EnvReserved(name.into()))
            );
        }
        for name in ["", "1A", "A=B", "A-B", "A B"] {
            assert_eq!(
                check_env(&env(name, "x")),
                Err(Refused::EnvName(name.into()))
            );
        }
        assert_eq!(
            check_env(&env("A", "x\0y")),
            Err(Refused::EnvValue("A".into()))
        );
        assert_eq!(check_env(&env("PROPLET_ID", "p")), Ok(()));
        assert_eq!(check_env(&env("TRACEPARENT", "00-…")), Ok(()));
    }
}
