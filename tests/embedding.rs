//! `proplet::run` as a library: a host that drops the worker's future (its task aborted, a
//! test failing, a runtime shut down) gets every thread the worker started back, instead of
//! a runtime that waits for its heartbeat thread for ever.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn a_runtime_holding_a_dropped_worker_shuts_down() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Every loop on: the heartbeat's thread also samples the process.
    let on = [
        ("PROPLET_ENABLE_MONITORING", "true"),
        ("PROPLET_METRICS_INTERVAL", "1s"),
    ];
    let (broker, worker, mut manager) = runtime.block_on(setup(&on));
    runtime.block_on(async {
        // A guest running when the worker goes.
        let spin = json!({"file": guests::base64("spin"), "name": "spin", "inputs": []});
        manager
            .send_json("control/manager/start", &start("spinning", spin))
            .await;
        manager
            .expect("control/proplet/alive", Duration::from_secs(20), |_| true)
            .await;
    });
    drop(worker);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let dropping = Instant::now();
    std::thread::spawn(move || {
        drop(runtime);
        done_tx.send(()).ok();
    });
    let ended = done_rx.recv_timeout(Duration::from_secs(30));
    assert!(
        ended.is_ok(),
        "the runtime still waits for the worker's threads after {:?}",
        dropping.elapsed()
    );
    drop(broker);
}
