//! The instance allocator, against the real `proplet` binary and a real mosquitto:
//! - `auto` pools instances where the address space allows, says so in discovery and in
//!   `proplet config`, and runs core modules and components from reused slots;
//! - a binary larger than a slot holds is refused as `memory`, with the way out named, and
//!   `on-demand` runs it;
//! - stopped, timed-out and refused tasks give their slots back, round after round;
//! - under an address-space limit too small for the pool, `auto` allocates on demand, while
//!   an explicit `pooling` fails its tasks with a clear error and the worker stays up.

mod common;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::daemon::Daemon;
use common::probe::Probe;
use common::*;
use serde_json::{Value, json};

/// Address-space limit (bytes) too small for the pool of a 2-task worker (4 slots of 8
/// memories of 4 GiB each) but roomy for on-demand allocation.
const SMALL_ADDRESS_SPACE: u64 = 48 << 30;

/// A module with nine memories of one page each: well within a 64 MiB budget, but one
/// more memory than a task's slot of the pool holds.
fn nine_memories() -> String {
    let wat = format!(
        r#"(module {} (func (export "main") (result i32) i32.const 7))"#,
        "(memory 1) ".repeat(9)
    );
    base64::engine::general_purpose::STANDARD.encode(wat::parse_str(wat).expect("wat"))
}

/// The announced allocator, once the proplet is ready.
async fn announced(m: &mut Manager) -> Value {
    let create = m
        .expect("control/proplet/create", Duration::from_secs(60), |v| {
            v["proplet_id"] == P
        })
        .await;
    create["metadata"]["instance_allocator"].clone()
}

fn nine_memories_task(id: &str) -> Value {
    start(
        id,
        json!({"file": nine_memories(), "name": "main", "inputs": []}),
    )
}

const WORKER: [(&str, &str); 2] = [
    ("PROPLET_MAX_CONCURRENT_TASKS", "2"),
    ("PROPLET_TASK_MEMORY", "64MiB"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pools_reuses_slots_and_refuses_what_a_slot_cannot_hold() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &WORKER);
    assert_eq!(announced(&mut m).await, "pooling");
    // More tasks than slots, core and component alike: slots are given back and reused.
    let greet = guests::component_base64("greet");
    for n in 0..12 {
        m.send_json(
            "control/manager/start",
            &start(&format!("core-{n}"), json!({})),
        )
        .await;
        let component = json!({"file": greet, "name": "add", "inputs": ["10", "20"]});
        m.send_json(
            "control/manager/start",
            &start(&format!("component-{n}"), component),
        )
        .await;
    }
    for n in 0..12 {
        assert_ok(&m.result(&format!("core-{n}")).await, "30");
        assert_ok(&m.result(&format!("component-{n}")).await, "30");
    }
    m.send_json(
        "control/manager/start",
        &nine_memories_task("nine-memories"),
    )
    .await;
    let r = m.result("nine-memories").await;
    assert_err(&r, "memory", "instance pool");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("PROPLET_INSTANCE_ALLOCATOR=on-demand")),
        "the way out is named: {r}"
    );
}

/// A module that reports what the task before it left behind, then leaves its own mark:
/// `main(v)` returns the sum of the word at 1024 (42 in its image), the first and last
/// bytes of a 1.5 MiB range from 64 KiB (zero: the first within the 1 MiB a slot may keep
/// resident, the last past it), and the first word of a page it grows (zero); then writes
/// `v` over all of them. A clean slot answers 42, whatever `v` was before.
fn snooper() -> String {
    let wat = r#"(module
      (memory 40)
      (data (i32.const 1024) "\2a\00\00\00")
      (func (export "main") (param $v i32) (result i32)
        (local $sum i32) (local $grown i32)
        (local.set $sum (i32.load (i32.const 1024)))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.const 65536))))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (i32.const 1638399))))
        (local.set $grown (i32.mul (memory.grow (i32.const 1)) (i32.const 65536)))
        (local.set $sum (i32.add (local.get $sum) (i32.load (local.get $grown))))
        (i32.store (i32.const 1024) (local.get $v))
        (memory.fill (i32.const 65536) (local.get $v) (i32.const 1572864))
        (i32.store (local.get $grown) (local.get $v))
        (local.get $sum)))"#;
    base64::engine::general_purpose::STANDARD.encode(wat::parse_str(wat).expect("wat"))
}

/// The probe sees what it left: called twice in one instance (no reset between), the
/// second call reads the first call's marks, so a slot that kept them would not answer 42.
#[test]
fn the_snooper_sees_a_slot_that_was_not_put_back() {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(snooper())
        .expect("base64");
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, bytes).expect("module");
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
    let main = instance
        .get_typed_func::<i32, i32>(&mut store, "main")
        .expect("main");
    assert_eq!(main.call(&mut store, 7).expect("first call"), 42);
    // 7 at 1024, 7 at both ends of the filled range; the second grow is a fresh page.
    assert_eq!(main.call(&mut store, 9).expect("second call"), 21);
}

/// A hostile tenant reading what the previous task in its slot wrote: the pool keeps
/// written pages resident between tasks (where the kernel can scan for them), so every one
/// must be put back to the image or to zeroes, whether kept or handed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_slot_holds_nothing_of_the_task_before() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let _d = Daemon::start(&broker, &WORKER);
    assert_eq!(announced(&mut m).await, "pooling");
    let file = snooper();
    for n in 0..8 {
        let id = format!("snoop-{n}");
        let task = json!({"file": file, "name": "main", "inputs": [format!("{}", 7 + n)]});
        m.send_json("control/manager/start", &start(&id, task))
            .await;
        // One at a time, so that each task takes the slot its predecessor left warm.
        assert_ok(&m.result(&id).await, "42");
    }
}

/// Ten rounds through a pool of four slots, every task ended the hard way: daemons stopped
/// while they spin, tasks cut off by their deadline, instantiations refused by the memory
/// budget. A slot any of them kept would starve a later round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_task_ends_gives_its_slot_back() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let probe = Probe::new();
    let mut env = WORKER.to_vec();
    env.push(probe.env());
    let _d = Daemon::start(&broker, &env);
    assert_eq!(announced(&mut m).await, "pooling");
    let spin = guests::base64("spin");
    let huge = base64::engine::general_purpose::STANDARD.encode(
        wat::parse_str(r#"(module (memory 2000) (func (export "main") (result i32) i32.const 7))"#)
            .expect("wat"),
    );
    for round in 0..10 {
        let daemons = [format!("daemon-{round}-a"), format!("daemon-{round}-b")];
        for id in &daemons {
            let task = json!({"daemon": true, "file": spin, "name": "spin", "inputs": []});
            m.send_json("control/manager/start", &start(id, task)).await;
        }
        for id in &daemons {
            // A daemon is answered once its guest runs: its instance holds a slot.
            assert_ok(&m.result(id).await, "");
        }
        for id in &daemons {
            m.send_json("control/manager/stop", &json!({"id": id}))
                .await;
        }
        probe.wait_for("proplet_tasks_running 0").await;
        let late = format!("late-{round}");
        let task =
            json!({"file": spin, "name": "spin", "inputs": [], "limits": {"timeout_ms": 100}});
        m.send_json("control/manager/start", &start(&late, task))
            .await;
        assert_err(&m.result(&late).await, "timeout", "timed out");
        let big = format!("big-{round}");
        let task = json!({"file": huge, "name": "main", "inputs": []});
        m.send_json("control/manager/start", &start(&big, task))
            .await;
        assert_err(&m.result(&big).await, "memory", "memory limit exceeded");
    }
    for n in 0..4 {
        let id = format!("after-{n}");
        m.send_json("control/manager/start", &start(&id, json!({})))
            .await;
        assert_ok(&m.result(&id).await, "30");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_has_no_slot_limits() {
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let mut env = WORKER.to_vec();
    env.push(("PROPLET_INSTANCE_ALLOCATOR", "on-demand"));
    let _d = Daemon::start(&broker, &env);
    assert_eq!(announced(&mut m).await, "on-demand");
    m.send_json(
        "control/manager/start",
        &nine_memories_task("nine-memories"),
    )
    .await;
    assert_ok(&m.result("nine-memories").await, "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_address_space_gets_on_demand_unless_pooling_is_demanded() {
    let limit = format!("--as={SMALL_ADDRESS_SPACE}");
    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let d = Daemon::start_with_prlimit(&broker, &WORKER, &limit);
    assert_eq!(announced(&mut m).await, "on-demand");
    m.send_json("control/manager/start", &start("auto", json!({})))
        .await;
    assert_ok(&m.result("auto").await, "30");
    drop(d);

    let broker = Broker::start();
    let mut m = Manager::connect(&broker).await;
    let mut env = WORKER.to_vec();
    env.push(("PROPLET_INSTANCE_ALLOCATOR", "pooling"));
    let _d = Daemon::start_with_prlimit(&broker, &env, &limit);
    // Discovery says what was asked for; the first task finds it cannot be had.
    assert_eq!(announced(&mut m).await, "pooling");
    for id in ["pooling-1", "pooling-2"] {
        m.send_json("control/manager/start", &start(id, json!({})))
            .await;
        assert_err(&m.result(id).await, "internal", "cannot set Wasmtime up");
    }
}

const IDENTITY: [(&str, &str); 3] = [
    ("PROPLET_DOMAIN_ID", "d"),
    ("PROPLET_CHANNEL_ID", "c"),
    ("PROPLET_CLIENT_ID", "p"),
];

#[test]
fn proplet_config_names_the_allocator_in_effect() {
    let config = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_proplet"))
            .env_clear()
            .envs(IDENTITY)
            .args(extra)
            .arg("config")
            .output()
            .expect("run proplet config");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let auto = config(&[]);
    assert!(
        auto.contains("instance_allocator = \"auto\"  # default"),
        "{auto}"
    );
    assert!(
        auto.contains("# instance allocator in effect: pooling"),
        "{auto}"
    );
    let on_demand = config(&["--instance-allocator", "on-demand"]);
    assert!(
        on_demand.contains("# instance allocator in effect: on-demand"),
        "{on_demand}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_proplet"))
        .env_clear()
        .envs(IDENTITY)
        .env("PROPLET_INSTANCE_ALLOCATOR", "pool")
        .arg("config")
        .output()
        .expect("run proplet config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("auto, pooling or on-demand"), "{err}");
}
