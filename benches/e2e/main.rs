//! The end-to-end benchmark (`just bench`): the real `proplet` binary, a real mosquitto on a
//! free loopback port, and Rust MQTT clients (rumqttc, as the proplet uses) as the manager
//! and as an echo peer. Every proplet figure sits next to the broker's own in the same run,
//! so the machine's noise cancels out:
//! - round trips start → result at QoS 0, 1 and 2, core module and component, next to the
//!   broker's own round trip through an echo peer (the same two hops, messages of the same
//!   sizes), 1,000 of each three times in turn, the pair with the median difference
//!   reported with each pair's difference beside it;
//! - bursts of 1,000 tasks next to the broker's own pub → sub rate for 1,000 messages of
//!   the same sizes through the echo peer (pings as large as the kind's start, answers as
//!   large as its result), three times each in turn, the median share reported with each
//!   pair's beside it; the worker's CPU per task (from /proc, median) and the largest
//!   heartbeat gap;
//! - spawn → discovery, idle and peak RSS, binary size and its start-up code section;
//! - what one fsync costs on the disk of the state directory (a round trip pays for one);
//! - QoS 2 round trips again with the proplet holding a CPU wake-up latency limit of 0
//!   (`PROPLET_CPU_LATENCY`; reported beside the default, where the device can be written);
//! - a CPU-bound guest against the same module run by Wasmtime in this process (nine runs
//!   of each in turn, the median of the pairs' ratios);
//! - the first task after a restart against a cold compile (the compile cache on disk).
//!
//! It prints one table and writes it, with the machine's description, to BENCHMARKS.md.
//! For work on the worker itself: `BENCH_QOS2=1` measures QoS 2 only (and still writes the
//! file), and `BENCH_PROFILE=core|component` sends bursts for 25 s to a proplet whose pid
//! it prints, for `perf record -p` (`BENCH_PROFILE=broker-core|broker-component`: the same
//! bursts through the echo peer, with the proplet idle; `rtt-core`, `rtt-component` and
//! `rtt-broker-…`: round trips one at a time instead of bursts; `BENCH_QOS=0|1` for
//! another QoS than 2).

#[path = "../../tests/common/mod.rs"]
mod common;
mod measure;
mod peer;
mod process;
mod report;

use common::Broker;
use report::Report;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; this bench has no test cases.
    }
    let broker = Broker::start();
    if let Ok(kind) = std::env::var("BENCH_PROFILE") {
        return measure::profile(&broker, &kind, 25).await;
    }
    let mut report = Report::new();
    let only_qos2 = std::env::var_os("BENCH_QOS2").is_some();
    if !only_qos2 {
        measure::startup(&broker, &mut report).await;
    }
    measure::fsync(&mut report);
    for qos in if only_qos2 { vec![2] } else { vec![0, 1, 2] } {
        measure::traffic(&broker, qos, &mut report).await;
    }
    measure::latency_limited(&broker, &mut report).await;
    measure::allocators(&broker, &mut report).await;
    measure::cpu_bound(&broker, &mut report).await;
    measure::restart(&broker, &mut report).await;
    report.binary_size();
    report.startup_section();
    report.finish();
}
