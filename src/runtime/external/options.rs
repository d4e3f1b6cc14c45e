//! The wasmtime CLI options a task's `cli_args` may hold.
//!
//! `--invoke NAME`, and the `-W`/`-S`/`-O` keys that only shape or narrow how the guest
//! runs. Anything else refuses the start: another file (`--preload`, `--config`, a
//! positional path, `--`), a directory or network grant (`--dir`, `-S inherit-network`),
//! an output file (`-D coredump=…`, `--profile`) or native code (`--allow-precompiled`).
//! Keys and spellings follow wasmtime's `crates/cli-flags` and `src/common.rs`.

/// Why a task's arguments or environment may not reach the external runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A `cli_args` entry that is not an allowed option.
    #[error(
        "cli_args entry {0:?} is not an allowed runtime option (--invoke NAME, -W/-S/-O KEY[=VAL])"
    )]
    Arg(String),
    /// An option key outside the allow-list of its group.
    #[error("cli_args: {flag} key {key:?} is not allowed")]
    Key {
        /// `-W`, `-S` or `-O`.
        flag: &'static str,
        /// The refused key.
        key: String,
    },
    /// An option without its value, or with a value that looks like another option.
    #[error("cli_args: {0} needs a value that is not an option")]
    MissingValue(String),
    /// The export name would be read as an option.
    #[error("export name {0:?} would be read as an option")]
    Export(String),
    /// An env name that is not a portable name (letters, digits, `_`).
    #[error("env name {0:?} is not a portable name ([A-Za-z_][A-Za-z0-9_]*)")]
    EnvName(String),
    /// An env name the runtime process, its loader or libc would act on.
    #[error("env name {0:?} is reserved: the runtime process itself would read it")]
    EnvReserved(String),
    /// An env value that no process environment can hold.
    #[error("env value of {0} contains a NUL byte")]
    EnvValue(String),
}

/// An option group of the wasmtime CLI (`-W KEY[=VAL][,…]`) and the keys a task may set.
struct Group {
    short: &'static str,
    long: &'static str,
    keys: &'static [&'static str],
}

/// Wasm features and caps: none names a file or grants the guest anything of the host.
const WASM_KEYS: &[&str] = &[
    "all-proposals",
    "bulk-memory",
    "component-model",
    "custom-page-sizes",
    "epoch-interruption",
    "exceptions",
    "extended-const",
    "fuel",
    "function-references",
    "gc",
    "max-instances",
    "max-memories",
    "max-memory-size",
    "max-table-elements",
    "max-tables",
    "max-wasm-stack",
    "memory64",
    "multi-memory",
    "multi-value",
    "nan-canonicalization",
    "reference-types",
    "relaxed-simd",
    "relaxed-simd-deterministic",
    "simd",
    "tail-call",
    "threads",
    "timeout",
    "trap-on-grow-failure",
    "unknown-exports-allow",
    "unknown-imports-default",
    "unknown-imports-trap",
    "wide-arithmetic",
];

/// WASI switches that keep or narrow the default (no network, no files, no host env).
/// Not here: `inherit-network`, `tcp`, `udp`, `allow-ip-name-lookup`, `tcplisten`,
/// `listenfd`, `inherit-env`, `http`, `tls`, `nn`, `nn-graph`, `keyvalue`, `config`,
/// `threads`.
const WASI_KEYS: &[&str] = &[
    "cli",
    "cli-exit-with-code",
    "common",
    "hostcall-fuel",
    "max-random-size",
    "max-resources",
    "network-error-code",
    "p3",
    "preview0",
    "preview2",
];

/// Code generation quality only.
const OPT_KEYS: &[&str] = &["opt-level"];

static GROUPS: [Group; 3] = [
    Group {
        short: "-W",
        long: "--wasm",
        keys: WASM_KEYS,
    },
    Group {
        short: "-S",
        long: "--wasi",
        keys: WASI_KEYS,
    },
    Group {
        short: "-O",
        long: "--optimize",
        keys: OPT_KEYS,
    },
];

/// Checks a task's `cli_args` against the allow-list (module docs).
pub fn check_cli_args(args: &[String]) -> Result<(), Refused> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--invoke" {
            let name = args.next().ok_or_else(|| missing(arg))?;
            check_value(arg, name)?;
        } else if let Some(name) = arg.strip_prefix("--invoke=") {
            check_value("--invoke", name)?;
        } else {
            let (group, value) = match group_of(arg) {
                Some((group, Some(value))) => (group, value),
                Some((group, None)) => (group, args.next().ok_or_else(|| missing(arg))?.as_str()),
                None => return Err(Refused::Arg(arg.clone())),
            };
            check_value(group.short, value)?;
            check_keys(group, value)?;
        }
    }
    Ok(())
}

/// The group `arg` opens, with its value when written in the same argument (`-Wkey`,
/// `-W=key`, `--wasm=key`).
fn group_of(arg: &str) -> Option<(&'static Group, Option<&str>)> {
    GROUPS.iter().find_map(|g| {
        if arg == g.short || arg == g.long {
            Some((g, None))
        } else if let Some(v) = arg.strip_prefix(g.long).and_then(|r| r.strip_prefix('=')) {
            Some((g, Some(v)))
        } else {
            let v = arg.strip_prefix(g.short)?;
            Some((g, Some(v.strip_prefix('=').unwrap_or(v))))
        }
    })
}

fn check_value(flag: &str, value: &str) -> Result<(), Refused> {
    if value.is_empty() || value.starts_with('-') {
        return Err(missing(flag));
    }
    Ok(())
}

fn check_keys(group: &Group, value: &str) -> Result<(), Refused> {
    for item in value.split(',') {
        let key = item.split_once('=').map_or(item, |(k, _)| k);
        if !group.keys.contains(&key) {
            return Err(Refused::Key {
                flag: group.short,
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

fn missing(flag: &str) -> Refused {
    Refused::MissingValue(flag.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Options a task may pass: they neither name a file nor widen access.
    const SAFE: &[&[&str]] = &[
        &["--invoke", "add"],
        &["--invoke=add"],
        &["-W", "max-memory-size=1048576,fuel=1000"],
        &["-Wtimeout=5s"],
        &["-W=simd=n"],
        &["--wasm=threads=y"],
        &["-S", "cli", "-S", "p3=n"],
        &["--wasi", "max-resources=10"],
        &["-O", "opt-level=0"],
    ];

    /// Options that name a file or widen access.
    const REFUSED: &[&[&str]] = &[
        &["--preload", "m=/tmp/other.wasm"],
        &["--preload=m=/tmp/other.wasm"],
        &["--dir", "/"],
        &["--dir=/::/host"],
        &["/tmp/other.wasm"],
        &["--"],
        &["--", "/tmp/other.wasm"],
        &["--allow-precompiled"],
        &["--config", "/tmp/wasmtime.toml"],
        &["--profile=guest,/tmp/out"],
        &["--env", "SECRET"],
        &["--argv0", "x"],
        &["-C", "cache-config=/tmp/c.toml"],
        &["-D", "coredump=/tmp/core"],
        &["-R", "path=/tmp/trace"],
    ];

    #[test]
    fn safe_options_pass_and_the_others_are_refused() {
        for ok in SAFE {
            assert_eq!(check_cli_args(&args(ok)), Ok(()), "{ok:?}");
        }
        for bad in REFUSED {
            let refused = Err(Refused::Arg(bad[0].to_owned()));
            assert_eq!(check_cli_args(&args(bad)), refused, "{bad:?}");
        }
    }

    #[test]
    fn widening_keys_and_smuggled_values_are_refused() {
        let key = |flag, key: &str| {
            Err(Refused::Key {
                flag,
                key: key.into(),
            })
        };
        let cases = [
            (&["-S", "inherit-network"][..], key("-S", "inherit-network")),
            (&["-S", "cli,tcplisten=0.0.0.0:80"], key("-S", "tcplisten")),
            (&["-Sinherit-env=y"], key("-S", "inherit-env")),
            (&["--wasi=nn-graph=onnx::/srv"], key("-S", "nn-graph")),
            (&["-W", "help"], key("-W", "help")),
            (&["-Wdir=/"], key("-W", "dir")),
            (&["-O", "pooling-allocator"], key("-O", "pooling-allocator")),
            (&["-W"], Err(Refused::MissingValue("-W".into()))),
            (&["-W", "--dir=/"], Err(Refused::MissingValue("-W".into()))),
            (&["--invoke"], Err(Refused::MissingValue("--invoke".into()))),
            (
                &["--invoke", "--dir=/"],
                Err(Refused::MissingValue("--invoke".into())),
            ),
            (
                &["--invoke", "f", "/x.wasm"],
                Err(Refused::Arg("/x.wasm".into())),
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(check_cli_args(&args(bad)), want, "{bad:?}");
        }
    }
}
