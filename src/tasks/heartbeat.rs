//! The heartbeat loop: the first beat as soon as the session is ready, then one every
//! interval, and again at once after every reconnection. It runs on a thread of its own
//! ([`spawn`]), so that a runtime saturated by a burst of work cannot delay a beat.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::protocol::Outbound;
use crate::telemetry::Metrics;
use crate::transport::Publisher;

/// Runs `beats` (the [`run`] loop) on a thread of its own with a small runtime of its own:
/// the OS schedules that thread, so a beat never waits in the shared runtime's run queue
/// behind thousands of tasks (as it did under a burst of starts). The handle resolves when
/// the loop ends.
pub fn spawn(beats: impl Future<Output = ()> + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    Ok(tokio::task::spawn_blocking(move || runtime.block_on(beats)))
}

/// Runs until `cancel` fires or the session goes away. Publishing never blocks a tick: a
/// beat goes to the publisher's heartbeat slot, which the session empties before anything
/// else, so no burst of results or refusals can hold it back (a beat still unsent when the
/// next one comes is replaced, and counted as dropped).
pub async fn run(
    publisher: Publisher,
    beat: Outbound,
    every: Duration,
    mut ready: watch::Receiver<u64>,
    cancel: CancellationToken,
    metrics: Metrics,
) {
    tokio::select! {
        _ = cancel.cancelled() => return,
        r = ready.wait_for(|generation| *generation > 0) => if r.is_err() { return },
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = ready.changed() => match changed {
                Ok(()) => ticker.reset_immediately(),
                Err(_) => return,
            },
            _ = ticker.tick() => {
                match publisher.try_send(beat.clone()) {
                    Ok(()) => metrics.heartbeat(),
                    Err(e) => debug!(error = %e, "heartbeat dropped"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Liveliness;

    fn beat() -> Outbound {
        Outbound::Liveliness(Liveliness {
            proplet_id: "p".into(),
            status: "alive",
            namespace: "default".into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn beats_once_ready_then_every_interval_and_after_reconnects() {
        let (publisher, mut rx) = Publisher::channel(16);
        let (ready_tx, ready) = watch::channel(0u64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            publisher,
            beat(),
            Duration::from_secs(5),
            ready,
            cancel.clone(),
            Metrics::default(),
        ));
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(
            rx.try_recv().is_none(),
            "no beat before the session is ready"
        );
        ready_tx.send_modify(|g| *g += 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let first = rx.try_recv().map(|m| m.payload().to_vec());
        assert_eq!(first, Some(beat().encode()), "first beat at once");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_some(), "second beat after one interval");
        tokio::time::sleep(Duration::from_secs(2)).await;
        ready_tx.send_modify(|g| *g += 1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(rx.try_recv().is_some(), "a beat at once after a reconnect");
        assert!(rx.try_recv().is_none());
        cancel.cancel();
        task.await.unwrap();
    }
}
