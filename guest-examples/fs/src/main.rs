//! A hostile filesystem guest (a WASI command): it tries what it is given as arguments
//! and prints one line per attempt, `<op>: ok <detail>` or `<op>: refused (<error>)`.
//!
//! Run with mounts `/models` (read-only) and `/data` (read-write): it reads a granted
//! volume, writes its scratch `/tmp`, and tries every escape — `..`, absolute host paths,
//! symlinks out of a mount, hard links across mounts, writes to a read-only mount. With
//! `connect=HOST:PORT` it opens a TCP connection (allowed only by `PROPLET_NET_ALLOW`).

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
