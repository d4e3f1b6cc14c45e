//! What the bench measures, one function per part of the table.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::client::{self, Client, Msg};
use crate::common::{Broker, guests, start, topic};
use crate::peer::{self, PONG, ping_topic};
use crate::process::Proplet;
use crate::report::{Report, mib, ms, us};

const ROUND_TRIPS: usize = 1000;
const BURST: usize = 1000;
/// `PROPLET_LIVELINESS_INTERVAL` of the harness.
const INTERVAL: Duration = Duration::from_secs(1);
const RESULTS: &str = "control/proplet/results";

/// The two kinds of task of the table.
#[derive(Clone, Copy)]
enum Kind {
    /// The `add` export of a 41-byte core module.
    Core,
    /// The `add` export of the `greet` component (51 KB, sent in every start).
    Component,
}

impl Kind {
    const BOTH: [Kind; 2] = [Kind::Core, Kind::Component];

    fn label(self) -> &'static str {
        match self {
            Kind::Core => "core",
            Kind::Component => "component",
        }
    }

    fn start(self, id: &str) -> Vec<u8> {
        static GREET: OnceLock<String> = OnceLock::new();
        let task = match self {
            Kind::Core => start(id, json!({})),
            Kind::Component => {
                let file = GREET.get_or_init(|| guests::component_base64("greet"));
                start(id, json!({"file": file, "inputs": ["10", "20"]}))
            }
        };
        serde_json::to_vec(&task).expect("json")
    }

    /// Most CPU per task (µs) and least share of the broker's own rate (at QoS 2).
    fn targets(self) -> (f64, f64, f64) {
        match self {
            Kind::Core => (100.0, 0.75, 0.3),
            Kind::Component => (150.0, 0.50, 0.5),
        }
    }
}

/// The manager's side: results, discovery and heartbeats, and the echo peer's answers.
struct Manager {
    client: Client,
    beats: Vec<Instant>,
}

impl Manager {
    async fn connect(broker: &Broker, qos: u8) -> Manager {
        let name = format!("bench-manager-{}", uuid::Uuid::new_v4());
        let filters = [topic("control/proplet/#"), PONG.to_owned()];
        let client = Client::connect(broker.port, &name, client::qos(qos), 20, &filters).await;
        Manager {
            client,
            beats: Vec::new(),
        }
    }

    /// The next message on `suffix`, noting heartbeats on the way.
    async fn reply(&mut self, suffix: &str) -> Msg {
        loop {
            let msg = self.client.recv().await;
            if msg.topic.ends_with("control/proplet/alive") {
                self.beats.push(msg.at);
            }
            if msg.topic.ends_with(suffix) {
                return msg;
            }
        }
    }

    /// The size of the result of one task of `kind`.
    async fn answer_len(&mut self, kind: Kind) -> usize {
        let (to, payload) = task(kind, &format!("size-{}", kind.label()))(0);
        self.client.publish(&to, payload).await;
        self.reply(RESULTS).await.payload.len()
    }

    async fn discovery(&mut self) -> Instant {
        self.reply("control/proplet/create").await.at
    }

    /// Sequential round trips: `send(i)` then its reply on `suffix`; sorted.
    async fn round_trips(
        &mut self,
        send: impl Fn(usize) -> (String, Vec<u8>),
        suffix: &str,
    ) -> Vec<Duration> {
        let mut times = Vec::with_capacity(ROUND_TRIPS);
        for i in 0..ROUND_TRIPS {
            let (to, payload) = send(i);
            let began = Instant::now();
            self.client.publish(&to, payload).await;
            self.reply(suffix).await;
            times.push(began.elapsed());
        }
        times.sort();
        times
    }

    /// `BURST` messages sent at once, then every reply: the time, and the largest gap
    /// between heartbeats from the last one before the burst to the first one after it.
    async fn burst(
        &mut self,
        send: impl Fn(usize) -> (String, Vec<u8>),
        suffix: &str,
    ) -> (Duration, Duration) {
        let before = self.beats.last().copied();
        let began = Instant::now();
        for i in 0..BURST {
            let (to, payload) = send(i);
            self.client.publish(&to, payload).await;
        }
        for _ in 0..BURST {
            self.reply(suffix).await;
        }
        let took = began.elapsed();
        let seen = self.beats.len();
        while self.beats.len() == seen {
            self.reply("control/proplet/alive").await;
        }
        let mut beats: Vec<Instant> = before.into_iter().collect();
        beats.extend(self.beats.iter().filter(|t| **t >= began));
        let gap = beats
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (took, gap)
    }
}

fn p50(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn task(kind: Kind, prefix: &str) -> impl Fn(usize) -> (String, Vec<u8>) {
    let prefix = prefix.to_owned();
    move |i| {
        (
            topic("control/manager/start"),
            kind.start(&format!("{prefix}-{i}")),
        )
    }
}

/// Pings as large as a start of `kind`, answered with `answer` bytes (the size of its
/// result), so the broker carries the same bytes as for the tasks.
fn ping(kind: Kind, answer: usize) -> impl Fn(usize) -> (String, Vec<u8>) {
    let to = ping_topic(answer);
    move |i| (to.clone(), kind.start(&format!("ping-{i}")))
}

/// Spawn → discovery (median of 5) and the idle worker's resident memory.
pub async fn startup(broker: &Broker, report: &mut Report) {
    let mut m = Manager::connect(broker, 2).await;
    let mut times = Vec::new();
    for _ in 0..5 {
        let began = Instant::now();
        let proplet = Proplet::spawn(broker, &[]);
        times.push(m.discovery().await - began);
        drop(proplet);
    }
    times.sort();
    report.row(
        "spawn → discovery (median of 5)",
        ms(p50(&times)),
        "≤ 15 ms",
        p50(&times) <= Duration::from_millis(15),
    );
    let proplet = Proplet::spawn(broker, &[]);
    m.discovery().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = proplet.rss();
    report.row(
        "idle RSS, 3 s after discovery (VmRSS)",
        mib(rss),
        "≤ 12 MB",
        rss <= 12_000_000,
    );
}

/// Round trips and bursts at `qos`, each next to the broker's own.
pub async fn traffic(broker: &Broker, qos: u8, report: &mut Report) {
    let mut m = Manager::connect(broker, qos).await;
    peer::echo(broker.port, client::qos(qos)).await;
    let qos_text = qos.to_string();
    let proplet = Proplet::spawn(broker, &[("PROPLET_MQTT_QOS", &qos_text)]);
    m.discovery().await;
    let answers = [
        m.answer_len(Kind::Core).await,
        m.answer_len(Kind::Component).await,
    ];
    for (kind, answer) in Kind::BOTH.into_iter().zip(answers) {
        round_trip_rows(&mut m, kind, answer, qos, report).await;
    }
    for (kind, answer) in Kind::BOTH.into_iter().zip(answers) {
        let pairs = burst_pairs(&mut m, &proplet, kind, answer, qos).await;
        broker_burst_row(&pairs, kind, answer, qos, report);
        burst_rows(&pairs, kind, qos, report);
    }
    if qos == 2 {
        report.row(
            "peak RSS after the bursts (VmHWM)",
            mib(proplet.peak_rss()),
            "reported",
            true,
        );
    }
}

/// Round trips of `kind` next to the broker's own for messages of the same sizes (pings
/// as large as its starts, answered with `answer` bytes), alternating [`PAIRS`] times as
/// the bursts do: the pair with the median difference is reported, the others beside it.
async fn round_trip_rows(m: &mut Manager, kind: Kind, answer: usize, qos: u8, report: &mut Report) {
    let label = kind.label();
    let trips = round_trip_pairs(m, kind, answer, qos, "").await;
    report.row(
        &format!("QoS {qos} round trip p50, broker alone (echo peer), {label} sizes"),
        ms(trips.broker),
        "",
        true,
    );
    let (_, _, most) = kind.targets();
    report.row(
        &format!("QoS {qos} round trip p50, {label} task"),
        trips.to_string(),
        &format!("≤ +{most} ms"),
        trips.over().as_secs_f64() * 1e3 <= most,
    );
}

/// The pair of round trips (the broker's own p50, the tasks' p50) with the median
/// difference, and every pair's difference.
struct RoundTrips {
    broker: Duration,
    tasks: Duration,
    each: Vec<String>,
}

impl RoundTrips {
    fn over(&self) -> Duration {
        self.tasks.saturating_sub(self.broker)
    }
}

impl std::fmt::Display for RoundTrips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tasks, over, each) = (ms(self.tasks), ms(self.over()), self.each.join(", "));
        write!(f, "{tasks} (+{over} over the broker) [{each}]")
    }
}

/// [`PAIRS`] alternations of 1,000 round trips through the echo peer and 1,000 tasks of
/// `kind` (their ids marked with `mark`).
async fn round_trip_pairs(
    m: &mut Manager,
    kind: Kind,
    answer: usize,
    qos: u8,
    mark: &str,
) -> RoundTrips {
    let label = kind.label();
    m.round_trips(task(kind, &format!("warm{mark}-{qos}-{label}")), RESULTS)
        .await;
    let mut pairs = Vec::with_capacity(PAIRS);
    for n in 0..PAIRS {
        let broker = p50(&m.round_trips(ping(kind, answer), PONG).await);
        let prefix = format!("rtt{mark}-{qos}-{label}-{n}");
        let tasks = p50(&m.round_trips(task(kind, &prefix), RESULTS).await);
        pairs.push((broker, tasks));
    }
    pairs.sort_by_key(|(broker, tasks)| tasks.saturating_sub(*broker));
    let (broker, tasks) = pairs[PAIRS / 2];
    let each = pairs
        .iter()
        .map(|(b, t)| format!("+{}", ms(t.saturating_sub(*b))))
        .collect();
    RoundTrips {
        broker,
        tasks,
        each,
    }
}

/// QoS 2 round trips again, with the proplet holding a CPU wake-up latency limit of 0
/// (`PROPLET_CPU_LATENCY`): idle cores poll instead of sleeping, machine-wide, so the
/// broker's own round trips run under the same limit. Reported, not a target: the default
/// is without it. Skipped, and said so, where the device cannot be written.
pub async fn latency_limited(broker: &Broker, report: &mut Report) {
    const LABEL: &str = "QoS 2 round trips with PROPLET_CPU_LATENCY=0";
    if let Err(e) = proplet::power::can_hold() {
        let why = format!("not measured: {}: {e}", proplet::power::DEVICE);
        return report.row(LABEL, why, "reported", true);
    }
    let mut m = Manager::connect(broker, 2).await;
    peer::echo(broker.port, client::qos(2)).await;
    let limited = [("PROPLET_MQTT_QOS", "2"), ("PROPLET_CPU_LATENCY", "0")];
    let _proplet = Proplet::spawn(broker, &limited);
    m.discovery().await;
    for kind in Kind::BOTH {
        let answer = m.answer_len(kind).await;
        let trips = round_trip_pairs(&mut m, kind, answer, 2, "-limited").await;
        report.row(
            &format!("{LABEL}: {} task", kind.label()),
            format!("{trips}; the broker alone {}", ms(trips.broker)),
            "reported",
            true,
        );
    }
}

/// How many times a burst of tasks alternates with the broker's own burst: the machine's
/// speed drifts from one second to the next, so each share compares two neighbouring
/// bursts, and the median share and CPU per task are reported (with the others beside
/// them). Seven, not three or five: the pairs of one run spread by a third (60–87 % of
/// the broker for one binary), and two slow seconds then move the median less.
const PAIRS: usize = 7;

/// A burst through the echo peer and the burst of tasks that followed it.
struct Pair {
    /// The broker alone: pings as large as the kind's starts, answered with as many bytes
    /// as its results.
    broker: Duration,
    /// The tasks.
    tasks: Duration,
    /// The worker's CPU per task over the burst of tasks.
    cpu: Duration,
    /// The largest heartbeat gap over the burst of tasks.
    gap: Duration,
}

impl Pair {
    /// The proplet's rate as a share of the broker's.
    fn share(&self) -> f64 {
        self.broker.as_secs_f64() / self.tasks.as_secs_f64()
    }
}

async fn burst_pairs(
    m: &mut Manager,
    proplet: &Proplet,
    kind: Kind,
    answer: usize,
    qos: u8,
) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for n in 0..PAIRS {
        let (broker, _) = m.burst(ping(kind, answer), PONG).await;
        let cpu = proplet.cpu();
        let prefix = format!("burst-{qos}-{}-{n}", kind.label());
        let (tasks, gap) = m.burst(task(kind, &prefix), RESULTS).await;
        let cpu = (proplet.cpu() - cpu) / BURST as u32;
        pairs.push(Pair {
            broker,
            tasks,
            cpu,
            gap,
        });
    }
    pairs
}

/// The median of `values`.
fn median_of<T: Copy + PartialOrd>(values: &[T]) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[sorted.len() / 2]
}

fn rate(took: Duration) -> f64 {
    BURST as f64 / took.as_secs_f64()
}

/// The broker's own rate for the bursts of `kind` (median, and each burst's).
fn broker_burst_row(pairs: &[Pair], kind: Kind, answer: usize, qos: u8, report: &mut Report) {
    let sent = kind.start("ping-0").len();
    let rates: Vec<f64> = pairs.iter().map(|p| rate(p.broker)).collect();
    let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    report.row(
        &format!(
            "QoS {qos} burst of {BURST}, broker alone, {} sizes ({} in, {answer} B out)",
            kind.label(),
            size(sent)
        ),
        format!("{:.0} msg/s [{}]", median_of(&rates), each.join(", ")),
        "",
        true,
    );
}

/// A message size, in bytes or KB.
fn size(bytes: usize) -> String {
    if bytes < 10_000 {
        format!("{bytes} B")
    } else {
        format!("{} KB", bytes / 1000)
    }
}

/// The bursts of tasks of `kind`: rate and share of the broker's (median of the pairs,
/// each pair's share beside it), worker CPU per task (median, each burst's beside it),
/// largest heartbeat gap (of all).
fn burst_rows(pairs: &[Pair], kind: Kind, qos: u8, report: &mut Report) {
    let shares: Vec<f64> = pairs.iter().map(Pair::share).collect();
    let share = median_of(&shares);
    let rates: Vec<f64> = pairs.iter().map(|p| rate(p.tasks)).collect();
    let each: Vec<String> = shares.iter().map(|s| format!("{:.0}", s * 100.0)).collect();
    let (cpu_most, share_least, _) = kind.targets();
    let line = format!("QoS {qos} burst of {BURST} {} tasks", kind.label());
    let target = if qos == 2 {
        format!("≥ {:.0} %", share_least * 100.0)
    } else {
        String::new()
    };
    report.row(
        &line,
        format!(
            "{:.0} tasks/s, {:.0} % of the broker [{} %]",
            median_of(&rates),
            share * 100.0,
            each.join(", ")
        ),
        &target,
        qos != 2 || share >= share_least,
    );
    let cpus: Vec<Duration> = pairs.iter().map(|p| p.cpu).collect();
    let cpu = median_of(&cpus);
    let each: Vec<String> = cpus
        .iter()
        .map(|c| format!("{:.0}", c.as_secs_f64() * 1e6))
        .collect();
    let line = format!("QoS {qos} worker CPU per {} task", kind.label());
    report.row(
        &line,
        format!("{} [{}]", us(cpu), each.join(", ")),
        &format!("≤ {cpu_most} µs"),
        cpu.as_secs_f64() * 1e6 <= cpu_most,
    );
    let gap = pairs.iter().map(|p| p.gap).max().unwrap_or_default();
    let line = format!("QoS {qos} largest heartbeat gap, {} bursts", kind.label());
    report.row(&line, ms(gap), "≤ 1.5 s", gap <= INTERVAL * 3 / 2);
}

/// Bursts of one kind for `seconds`, to profile the worker from outside (`perf record -p`
/// on the pid it prints): `BENCH_PROFILE=core|component just bench`. `broker-core` and
/// `broker-component` send the same bursts through the echo peer instead (pings as large
/// as the starts, answers as large as the results; the proplet idles), for the broker's
/// and the clients' share. With `rtt-` in front (`rtt-core`, `rtt-broker-core`, …) the
/// messages go one at a time, each after the answer to the one before: for tracing where a
/// round trip's time goes. `BENCH_QOS` sets the QoS (2 unless said).
pub async fn profile(broker: &Broker, mode: &str, seconds: u64) {
    let qos: u8 = match std::env::var("BENCH_QOS") {
        Ok(qos) => qos.parse().expect("BENCH_QOS is 0, 1 or 2"),
        Err(_) => 2,
    };
    let mut m = Manager::connect(broker, qos).await;
    peer::echo(broker.port, client::qos(qos)).await;
    let qos_text = qos.to_string();
    let proplet = Proplet::spawn(broker, &[("PROPLET_MQTT_QOS", &qos_text)]);
    m.discovery().await;
    let (one_by_one, mode) = match mode.strip_prefix("rtt-") {
        Some(rest) => (true, rest),
        None => (false, mode),
    };
    let (through_broker, kind) = match mode.strip_prefix("broker-") {
        Some(kind) => (true, kind),
        None => (false, mode),
    };
    let kind = if kind == "component" {
        Kind::Component
    } else {
        Kind::Core
    };
    let answer = m.answer_len(kind).await;
    println!("profiling proplet pid {} for {seconds} s", proplet.pid());
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0;
    while Instant::now() < until {
        if one_by_one {
            let p50 = match through_broker {
                true => p50(&m.round_trips(ping(kind, answer), PONG).await),
                false => p50(&m
                    .round_trips(task(kind, &format!("rtt-{n}")), RESULTS)
                    .await),
            };
            println!("round trip p50 {p50:?}");
        } else if through_broker {
            m.burst(ping(kind, answer), PONG).await;
        } else {
            m.burst(task(kind, &format!("profile-{n}")), RESULTS).await;
        }
        n += 1;
    }
}

/// CPU per task under each instance allocator (QoS 2).
pub async fn allocators(broker: &Broker, report: &mut Report) {
    for allocator in ["pooling", "on-demand"] {
        let mut m = Manager::connect(broker, 2).await;
        let proplet = Proplet::spawn(broker, &[("PROPLET_INSTANCE_ALLOCATOR", allocator)]);
        m.discovery().await;
        for kind in Kind::BOTH {
            m.round_trips(
                task(kind, &format!("warm-{allocator}-{}", kind.label())),
                RESULTS,
            )
            .await;
            let cpu = proplet.cpu();
            m.burst(
                task(kind, &format!("alloc-{allocator}-{}", kind.label())),
                RESULTS,
            )
            .await;
            let per_task = (proplet.cpu() - cpu) / BURST as u32;
            report.row(
                &format!("CPU per {} task, {allocator} instances", kind.label()),
                us(per_task),
                "",
                true,
            );
        }
    }
}

/// A module whose `spin` export counts its argument down to zero.
fn spinner() -> Vec<u8> {
    wat::parse_str(
        r#"(module (func (export "spin") (param i64) (result i64)
             (loop $l
               (local.set 0 (i64.sub (local.get 0) (i64.const 1)))
               (br_if $l (i64.gt_s (local.get 0) (i64.const 0))))
             (local.get 0)))"#,
    )
    .expect("wat")
}

const SPINS: u64 = 400_000_000;

/// The spinner's run time in the worker (its round trip less the broker's) against the
/// same module run by Wasmtime in this process: nine runs of each, in turn (which of a pair
/// goes first alternates), and the median of the nine pairs' ratios. Each pair runs within
/// half a second, so the machine's drift from second to second cancels; the fastest run of
/// each, as this took before, is the luckiest one, not the typical one.
pub async fn cpu_bound(broker: &Broker, report: &mut Report) {
    let mut m = Manager::connect(broker, 2).await;
    peer::echo(broker.port, client::qos(2)).await;
    let _proplet = Proplet::spawn(broker, &[]);
    m.discovery().await;
    let answer = m.answer_len(Kind::Core).await;
    let base = p50(&m.round_trips(ping(Kind::Core, answer), PONG).await);
    let file = base64::engine::general_purpose::STANDARD.encode(spinner());
    // The first run compiles the spinner: it is not counted.
    spin_in_worker(&mut m, &file, 0).await;
    let mut pairs = Vec::new();
    for i in 1..=9 {
        // Which goes first alternates, so that neither always follows the other.
        let (worker, local) = if i % 2 == 0 {
            let local = spin_in_process().await;
            (spin_in_worker(&mut m, &file, i).await, local)
        } else {
            let worker = spin_in_worker(&mut m, &file, i).await;
            (worker, spin_in_process().await)
        };
        pairs.push((worker.saturating_sub(base), local));
    }
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(w, l)| w.as_secs_f64() / l.as_secs_f64() - 1.0)
        .collect();
    let over = median_of(&ratios);
    let worker = median_of(&pairs.iter().map(|p| p.0).collect::<Vec<_>>());
    let local = median_of(&pairs.iter().map(|p| p.1).collect::<Vec<_>>());
    let each: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:+.1}", r * 100.0))
        .collect();
    report.row(
        "CPU-bound guest (400 M loop iterations) vs Wasmtime in-process",
        format!(
            "{} vs {} ({:+.1} %) [{} %]",
            ms(worker),
            ms(local),
            over * 100.0,
            each.join(", ")
        ),
        "≤ +5 %",
        over <= 0.05,
    );
}

/// One run of the spinner in this process, off the async workers.
async fn spin_in_process() -> Duration {
    let run = tokio::task::spawn_blocking(|| in_process(&spinner()));
    run.await.expect("in-process run")
}

/// One spinner task's round trip.
async fn spin_in_worker(m: &mut Manager, file: &str, i: usize) -> Duration {
    let task = start(
        &format!("spin-{i}"),
        json!({"file": file, "name": "spin", "inputs": [SPINS.to_string()]}),
    );
    let began = Instant::now();
    let payload = serde_json::to_vec(&task).expect("json");
    m.client
        .publish(&topic("control/manager/start"), payload)
        .await;
    let r: Value = serde_json::from_slice(&m.reply(RESULTS).await.payload).expect("result");
    assert_eq!(r["results"], "0", "the spinner ran: {r}");
    began.elapsed()
}

/// The spinner under the worker's Wasmtime settings (epoch interruption with a 10 ms
/// ticker, async calls yielding at every tick), timed from instantiation to return.
fn in_process(wasm: &[u8]) -> Duration {
    use wasmtime::{Config, Engine, Linker, Module, Store, UpdateDeadline, Val};
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).expect("engine");
    let module = Module::new(&engine, wasm).expect("module");
    let ticker = engine.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let tick = std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            ticker.increment_epoch();
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let took = runtime.block_on(async {
        let began = Instant::now();
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let linker = Linker::new(&engine);
        let instance = linker
            .instantiate_async(&mut store, &module)
            .await
            .expect("instance");
        let spin = instance.get_func(&mut store, "spin").expect("spin");
        let mut out = [Val::I64(0)];
        spin.call_async(&mut store, &[Val::I64(SPINS as i64)], &mut out)
            .await
            .expect("call");
        began.elapsed()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tick.join().ok();
    took
}

/// A core module of about 1.4 MB: many small exported functions.
fn large_module() -> Vec<u8> {
    let mut wat = String::from("(module\n");
    for i in 0..20_000 {
        wat.push_str(&format!(
            "(func (export \"f{i}\") (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul i32.const {i} i32.xor i32.const 7 i32.rem_u local.get 0 i32.add i32.const 11 i32.shl i32.const {i} i32.sub i32.const 5 i32.rotl i32.const 13 i32.or i32.const {i} i32.and i32.const 17 i32.add i32.const 19 i32.mul i32.const 23 i32.div_u i32.const 29 i32.add i32.const 31 i32.xor i32.const 37 i32.add)\n"
        ));
    }
    wat.push_str("(func (export \"main\") (result i32) i32.const 7))");
    wat::parse_str(&wat).expect("wat")
}

/// The first task of a large module: compiled (cold cache), after a restart with the
/// compile cache on disk, and from the memory cache.
pub async fn restart(broker: &Broker, report: &mut Report) {
    let wasm = large_module();
    let file = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let cache = tempfile::tempdir().expect("cache dir");
    let cache_dir = cache.path().to_str().expect("utf-8").to_owned();
    let mut m = Manager::connect(broker, 2).await;
    let mut first = Vec::new();
    for round in 0..2 {
        let _proplet = Proplet::spawn(broker, &[("PROPLET_CACHE_DIR", &cache_dir)]);
        m.discovery().await;
        for n in 0..2 {
            let task = start(
                &format!("large-{round}-{n}"),
                json!({"file": file, "name": "main", "inputs": []}),
            );
            let began = Instant::now();
            m.client
                .publish(
                    &topic("control/manager/start"),
                    serde_json::to_vec(&task).expect("json"),
                )
                .await;
            m.reply(RESULTS).await;
            first.push(began.elapsed());
        }
    }
    let (cold, warm, hot) = (first[0], first[2], first[1].min(first[3]));
    let size = wasm.len() as f64 / 1e6;
    let line = format!("first task of a {size:.1} MB module: cold / after restart / in memory");
    let share = warm.as_secs_f64() / cold.as_secs_f64();
    report.row(
        &line,
        format!(
            "{} / {} ({:.0} % of cold) / {}",
            ms(cold),
            ms(warm),
            share * 100.0,
            ms(hot)
        ),
        "≤ 25 % and ≤ 150 ms",
        share <= 0.25 && warm <= Duration::from_millis(150),
    );
}

/// What one durable write costs on the disk of the state directories (the system's temp
/// directory): a 4 KiB write and `fdatasync`, p50 of 200. A round trip pays for one (the
/// journal commit that stores the result before it is published).
pub fn fsync(report: &mut Report) {
    use std::io::{Seek as _, SeekFrom, Write as _};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("fsync")).expect("create");
    file.write_all(&[0; 1 << 20]).expect("write");
    file.sync_all().expect("sync");
    let mut times: Vec<Duration> = (0..200u64)
        .map(|n| {
            let began = Instant::now();
            file.seek(SeekFrom::Start((n % 256) * 4096)).expect("seek");
            file.write_all(&[1; 4096]).expect("write");
            file.sync_data().expect("fdatasync");
            began.elapsed()
        })
        .collect();
    times.sort();
    report.row(
        "one fsync on the state directory's disk (4 KiB write + fdatasync, p50)",
        ms(p50(&times)),
        "",
        true,
    );
}
