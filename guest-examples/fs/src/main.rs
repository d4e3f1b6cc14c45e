//! A hostile filesystem guest (a WASI command): it tries what it is given as arguments
//! and prints one line per attempt, `<op>: ok <detail>` or `<op>: refused (<error>)`.
//!
//! Run with mounts `/models` (read-only) and `/data` (read-write): it reads a granted
//! volume, writes its scratch `/tmp`, and tries every escape — `..`, absolute host paths,
//! symlinks out of a mount, hard links across mounts, writes to a read-only mount. With
//! `connect=HOST:PORT` it opens a TCP connection (allowed only by `PROPLET_NET_ALLOW`).
//!
//! Exhaustion attacks: `deep=N` nests N directories in `/tmp` (walking down through
//! directory handles, deeper than any path can name), `open-many` opens files until
//! refused and reports how many it got, `fill=BYTES` writes that much into `/tmp`, and
//! `list=PATH` names what a directory holds.

use std::fs;
use std::io;

fn main() {
    for op in std::env::args().skip(1) {
        match attempt(&op) {
            Ok(detail) => println!("{op}: ok {detail}"),
            Err(e) => println!("{op}: refused ({:?})", e.kind()),
        }
    }
}

fn attempt(op: &str) -> io::Result<String> {
    match op {
        "read-volume" => fs::read_to_string("/models/hello.txt").map(|s| s.trim().to_owned()),
        "write-scratch" => {
            fs::write("/tmp/note.txt", "scratch")?;
            fs::read_to_string("/tmp/note.txt")
        }
        "write-rw" => fs::write("/data/out.txt", "written").map(|()| String::new()),
        "write-ro" => fs::write("/models/new.txt", "nope").map(|()| String::new()),
        "dotdot" => fs::read_to_string("/models/../../etc/passwd"),
        "absolute" => fs::read_to_string("/etc/passwd"),
        "symlink-out" => fs::read_to_string("/models/escape/passwd"),
        "symlink-make" => {
            symlink_in_scratch("/etc/passwd", "link")?;
            fs::read_to_string("/tmp/link")
        }
        "symlink-dotdot" => {
            symlink_in_scratch("../../../../etc/passwd", "up")?;
            fs::read_to_string("/tmp/up")
        }
        "hardlink" => fs::hard_link("/models/hello.txt", "/tmp/hard").map(|()| String::new()),
        "list-root" => fs::read_dir("/").map(|d| d.count().to_string()),
        op if op.starts_with("deep=") => nest(number(&op["deep=".len()..])?),
        "open-many" => Ok(open_many().to_string()),
        op if op.starts_with("fill=") => fill(number(&op["fill=".len()..])?),
        op if op.starts_with("list=") => {
            let mut names: Vec<String> = fs::read_dir(&op["list=".len()..])?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<io::Result<_>>()?;
            names.sort();
            Ok(names.join(","))
        }
        op if op.starts_with("connect=") => {
            let stream = std::net::TcpStream::connect(&op["connect=".len()..])?;
            stream.peer_addr().map(|a| a.to_string())
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "unknown op")),
    }
}

/// Creates a symlink `name` -> `target` inside the scratch preopen (std has no stable API
/// for symlinks on WASI, so this goes through the wasi:filesystem bindings).
fn symlink_in_scratch(target: &str, name: &str) -> io::Result<()> {
    let (dir, _) = wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/tmp")
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no /tmp preopen"))?;
    dir.symlink_at(target, name).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, format!("{e:?}")))
}

fn number(text: &str) -> io::Result<u64> {
    text.parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a number"))
}

fn scratch() -> io::Result<wasi::filesystem::types::Descriptor> {
    wasi::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == "/tmp")
        .map(|(dir, _)| dir)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no /tmp preopen"))
}

/// Creates `depth` nested directories under `/tmp`, each opened through its parent's
/// handle (one handle held at a time), with a small file at every level.
fn nest(depth: u64) -> io::Result<String> {
    use wasi::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
    let fail = |e: wasi::filesystem::types::ErrorCode| io::Error::other(format!("{e:?}"));
    let mut dir = scratch()?;
    for level in 0..depth {
        dir.create_directory_at("d").map_err(fail)?;
        let file = dir
            .open_at(PathFlags::empty(), "f", OpenFlags::CREATE, DescriptorFlags::WRITE)
            .map_err(fail)?;
        drop(file);
        dir = dir
            .open_at(
                PathFlags::empty(),
                "d",
                OpenFlags::DIRECTORY,
                DescriptorFlags::READ | DescriptorFlags::MUTATE_DIRECTORY,
            )
            .map_err(|e| io::Error::other(format!("level {level}: {e:?}")))?;
    }
    Ok(depth.to_string())
}

/// Opens files in `/tmp` until refused, keeping them all open; returns how many.
fn open_many() -> usize {
    let mut files = Vec::new();
    while files.len() < 1_000_000 {
        match fs::File::create(format!("/tmp/open-{}", files.len())) {
            Ok(f) => files.push(f),
            Err(_) => break,
        }
    }
    files.len()
}

/// Writes `bytes` into `/tmp/fill` in 1 MiB pieces.
fn fill(bytes: u64) -> io::Result<String> {
    use std::io::Write as _;
    let mut file = fs::File::create("/tmp/fill")?;
    let piece = vec![7u8; 1 << 20];
    let mut written = 0u64;
    while written < bytes {
        let n = piece.len().min(usize::try_from(bytes - written).unwrap_or(piece.len()));
        file.write_all(&piece[..n])?;
        written += n as u64;
    }
    Ok(written.to_string())
}
