//! The bench's one table: printed, and written to BENCHMARKS.md with the machine it ran on.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

struct Row {
    what: String,
    value: String,
    target: String,
    met: bool,
}

/// The rows measured so far.
pub struct Report {
    rows: Vec<Row>,
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Report {
    pub fn new() -> Report {
        Report { rows: Vec::new() }
    }

    /// One measurement; `target` empty for a reference figure.
    pub fn row(&mut self, what: &str, value: String, target: &str, met: bool) {
        println!(
            "{what}: {value}{}",
            if target.is_empty() {
                String::new()
            } else {
                format!("  (target {target})")
            }
        );
        self.rows.push(Row {
            what: what.to_owned(),
            value,
            target: target.to_owned(),
            met,
        });
    }

    /// The daemon binary as built for this bench, and stripped of symbols.
    pub fn binary_size(&mut self) {
        let binary = env!("CARGO_BIN_EXE_proplet");
        let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
        let stripped = tempfile::NamedTempFile::new().expect("temp file");
        let status = Command::new("strip")
            .arg("-o")
            .arg(stripped.path())
            .arg(binary)
            .status();
        let small = match status {
            Ok(s) if s.success() => std::fs::metadata(stripped.path())
                .map_or_else(|e| format!("unreadable ({e})"), |m| mib(m.len())),
            Ok(s) => format!("not measured (strip: {s})"),
            Err(e) => format!("not measured (strip: {e}; install binutils)"),
        };
        self.row(
            "daemon binary: as built / stripped",
            format!("{} / {small}", mib(size)),
            "reported",
            true,
        );
    }

    /// The size of the start-up code laid out together (`.text.proplet_startup`, see
    /// build.rs): it shrinks when `link/startup.ld` no longer names what a start runs.
    pub fn startup_section(&mut self) {
        let binary = env!("CARGO_BIN_EXE_proplet");
        let value = match Command::new("readelf").args(["-SW", binary]).output() {
            Err(e) => format!("not measured (readelf: {e}; install binutils)"),
            Ok(out) => match section_size(
                &String::from_utf8_lossy(&out.stdout),
                ".text.proplet_startup",
            ) {
                Some(bytes) => mib(bytes),
                None => "none (not Linux, or PROPLET_STARTUP_LAYOUT=0)".to_owned(),
            },
        };
        self.row(
            "start-up code laid out together (link/startup.ld)",
            value,
            "reported",
            true,
        );
    }

    /// Prints the table and writes BENCHMARKS.md.
    pub fn finish(self) {
        let table = self.table();
        println!("\n{table}");
        let doc = format!(
            "# Benchmarks\n\nWritten by `just bench` (benches/e2e); do not edit by hand. Every proplet \
             figure is measured in the same run as the broker's own, on this machine:\n\n{}\n\
             Clients: rumqttc (the proplet's MQTT library) as the manager and as an echo peer \
             that stands where the proplet would; broker: mosquitto on loopback. Worker CPU \
             is user + system time of the proplet process from /proc over a burst of 1,000 \
             tasks; memory is VmRSS and VmHWM from /proc.\n\n{table}",
            machine()
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
        std::fs::write(path, doc).expect("write BENCHMARKS.md");
        println!("written to {path}");
    }

    fn table(&self) -> String {
        let mut out = String::from("| Measurement | Value | Target | Met |\n|---|---|---|---|\n");
        for r in &self.rows {
            let met = match (r.target.is_empty(), r.met) {
                (true, _) => "",
                (false, true) => "yes",
                (false, false) => "**no**",
            };
            writeln!(out, "| {} | {} | {} | {met} |", r.what, r.value, r.target).ok();
        }
        out
    }
}

/// CPU model and count, memory, kernel, toolchain and broker versions, date.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("MemTotal:")
        .trim()
        .to_owned();
    let mut out = String::new();
    for (what, value) in [
        ("Date", run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("CPU", format!("{model}, {cores} cores available")),
        ("Memory", mem),
        ("Kernel", run("uname", &["-sr"])),
        ("Rust", run("rustc", &["-V"])),
        (
            "Broker",
            run("mosquitto", &["-h"])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
    ] {
        writeln!(out, "- {what}: {value}").ok();
    }
    out
}

fn run(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .trim()
            .to_owned()
        })
        .unwrap_or_default()
}

/// The size of section `name` in `readelf -SW` output (`[Nr] Name Type Address Off Size …`).
fn section_size(readelf: &str, name: &str) -> Option<u64> {
    readelf.lines().find_map(|line| {
        let mut fields = line.split(']').nth(1)?.split_whitespace();
        if fields.next()? != name {
            return None;
        }
        u64::from_str_radix(fields.nth(3)?, 16).ok()
    })
}
