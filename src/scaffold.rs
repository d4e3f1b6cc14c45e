//! `proplet new` and `proplet wit`: a ready workload project, and the WIT this proplet
//! speaks.
//!
//! The templates live in `templates/` and are compiled in, with the WIT of `wit/`, so a
//! project always starts from the API of the proplet that created it. Binding generators
//! are pinned to the versions the sample guests are built and tested with (a unit test
//! keeps the two in step).

use std::path::{Path, PathBuf};

/// The WIT of this proplet (`propeller:proplet`), as vendored into new projects.
pub const WIT: &str = include_str!("../wit/proplet.wit");

/// Every WIT file a project needs, by its path in the project: ours, and the WASI
/// interfaces our world imports besides WASI preview 2 (under `wit/deps/`).
pub const WIT_FILES: &[File] = &[
    ("wit/proplet.wit", WIT),
    (
        "wit/deps/config/store.wit",
        include_str!("../wit/deps/config/store.wit"),
    ),
    (
        "wit/deps/keyvalue/store.wit",
        include_str!("../wit/deps/keyvalue/store.wit"),
    ),
    (
        "wit/deps/keyvalue/atomic.wit",
        include_str!("../wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue/batch.wit",
        include_str!("../wit/deps/keyvalue/batch.wit"),
    ),
];

/// The `wit-bindgen` a Rust project pins (as `guest-examples/` uses).
pub const WIT_BINDGEN: &str = "0.46.0";

/// The `componentize-py` a Python project pins (as `scripts/setup.sh` installs).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// A project language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built for `wasm32-wasip2`.
    Rust,
    /// Python with componentize-py.
    Python,
}

/// A template file: its path in the project, and its text.
pub type File = (&'static str, &'static str);

const RUST: &[File] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("justfile", include_str!("../templates/rust/justfile")),
    ("README.md", include_str!("../templates/rust/README.md")),
    (".gitignore", include_str!("../templates/rust/.gitignore")),
];

const PYTHON: &[File] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("logic.py", include_str!("../templates/python/logic.py")),
    (
        "test_logic.py",
        include_str!("../templates/python/test_logic.py"),
    ),
    (
        "requirements.txt",
        include_str!("../templates/python/requirements.txt"),
    ),
    ("justfile", include_str!("../templates/python/justfile")),
    ("README.md", include_str!("../templates/python/README.md")),
    (".gitignore", include_str!("../templates/python/.gitignore")),
];

/// Why a project was not created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// Not a usable project name.
    #[error(
        "{0:?} is not a project name: use lowercase letters, digits, - and _, starting with a letter"
    )]
    Name(String),
    /// Something is already there.
    #[error("{} already exists; choose another name or directory", .0.display())]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Creates the project `name` in `parent` and returns its directory.
pub fn create(name: &str, lang: Lang, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
    };
    for (path, text) in files {
        write(&dir.join(path), &fill(text, name))?;
    }
    write_wit(&dir)?;
    Ok(dir)
}

/// Writes [`WIT_FILES`] under `dir` (`proplet wit --dir`), as they are.
pub fn write_wit(dir: &Path) -> Result<(), ScaffoldError> {
    for (path, text) in WIT_FILES {
        write(&dir.join(path), text)?;
    }
    Ok(())
}

/// `text` with the template's placeholders filled in.
fn fill(text: &str, name: &str) -> String {
    text.replace("__NAME__", name)
        .replace("__CRATE__", &name.replace('-', "_"))
        .replace("__WIT_BINDGEN__", WIT_BINDGEN)
        .replace("__COMPONENTIZE_PY__", COMPONENTIZE_PY)
        .replace("__PROPLET_VERSION__", env!("CARGO_PKG_VERSION"))
}

/// A name that is a valid crate name, Python-friendly file name and directory.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c));
    match first_ok && rest_ok && name.len() <= 64 {
        true => Ok(()),
        false => Err(ScaffoldError::Name(name.to_owned())),
    }
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let failed = |source| ScaffoldError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_has_every_file_filled_in() {
        let parent = tempfile::tempdir().expect("tempdir");
        for (name, lang) in [("my-task", Lang::Rust), ("py-task", Lang::Python)] {
            let dir = create(name, lang, parent.path()).expect("created");
            for (path, text) in WIT_FILES {
                let wit = std::fs::read_to_string(dir.join(path)).expect("wit");
                assert_eq!(&wit, text);
            }
            let justfile = std::fs::read_to_string(dir.join("justfile")).expect("justfile");
            assert!(
                justfile.contains(name) && !justfile.contains("__"),
                "{justfile}"
            );
            assert!(matches!(
                create(name, lang, parent.path()),
                Err(ScaffoldError::Exists(_))
            ));
        }
        let cargo = std::fs::read_to_string(parent.path().join("my-task/Cargo.toml"));
        assert!(
            cargo
                .expect("Cargo.toml")
                .contains("wit-bindgen = \"=0.46.0\"")
        );
    }

    #[test]
    fn names_that_would_break_a_build_are_refused() {
        for bad in ["", "My", "1x", "a b", "../x", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("ok-name_2").is_ok());
    }

    /// The pinned generators are the ones the sample guests are built and tested with.
    #[test]
    fn pinned_versions_match_the_sample_guests() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock = std::fs::read_to_string(root.join("guest-examples/Cargo.lock")).expect("lock");
        let pinned = format!("name = \"wit-bindgen\"\nversion = \"{WIT_BINDGEN}\"");
        assert!(
            lock.contains(&pinned),
            "guest-examples use another wit-bindgen"
        );
        let setup = std::fs::read_to_string(root.join("scripts/setup.sh")).expect("setup");
        assert!(setup.contains(&format!("componentize-py=={COMPONENTIZE_PY}")));
    }
}
