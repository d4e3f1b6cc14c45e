//! The [`Outbox`]: the receiving end of a [`super::Publisher`]'s three lanes, read by the
//! MQTT session (or by unit tests). A waiting heartbeat always comes first;
//! the main queue and the refusals are then taken in turn, so neither starves the other.

use std::future::poll_fn;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, watch};

use super::Encoded;

/// The receiving end of a [`super::Publisher`]'s lanes.
#[derive(Debug)]
pub struct Outbox {
    heartbeat: watch::Receiver<Option<Encoded>>,
    /// The main queue and the refusals, taken in turn.
    queues: [mpsc::Receiver<Encoded>; 2],
    /// Which queue is asked first next time.
    next: usize,
}

impl Outbox {
    /// The outbox of a publisher's heartbeat slot and its two queues.
    pub(super) fn new(
        heartbeat: watch::Receiver<Option<Encoded>>,
        main: mpsc::Receiver<Encoded>,
        refusals: mpsc::Receiver<Encoded>,
    ) -> Self {
        Outbox {
            heartbeat,
            queues: [main, refusals],
            next: 0,
        }
    }

    /// The next message: a waiting heartbeat first, else the two queues in turn. `None`
    /// once every [`super::Publisher`] is gone and the queues are empty.
    pub async fn recv(&mut self) -> Option<Encoded> {
        loop {
            if let Some(beat) = self.take_beat() {
                return Some(beat);
            }
            let Outbox {
                heartbeat,
                queues,
                next,
            } = self;
            let beat_sent = tokio::select! {
                biased;
                changed = heartbeat.changed() => changed.is_ok(),
                msg = poll_fn(|cx| poll_queues(queues, next, cx)) => return msg,
            };
            if !beat_sent {
                // Every publisher is gone: what is left is in the queues.
                return poll_fn(|cx| poll_queues(&mut self.queues, &mut self.next, cx)).await;
            }
            // `changed` marked the beat seen; take it here.
            if let Some(beat) = self.heartbeat.borrow_and_update().clone() {
                return Some(beat);
            }
        }
    }

    /// The next heartbeat only if `beat_only` (while nothing else may be sent), else the
    /// next message. Cancel-safe.
    pub(super) async fn next(&mut self, beat_only: bool) -> Option<Encoded> {
        match beat_only {
            true => self.next_beat().await,
            false => self.recv().await,
        }
    }

    /// The next heartbeat; `None` once every [`super::Publisher`] is gone.
    async fn next_beat(&mut self) -> Option<Encoded> {
        loop {
            self.heartbeat.changed().await.ok()?;
            if let Some(beat) = self.heartbeat.borrow_and_update().clone() {
                return Some(beat);
            }
        }
    }

    /// The next message if one is waiting right now (heartbeat first, then in turn).
    pub fn try_recv(&mut self) -> Option<Encoded> {
        if let Some(beat) = self.take_beat() {
            return Some(beat);
        }
        for k in 0..2 {
            let i = (self.next + k) % 2;
            if let Ok(msg) = self.queues[i].try_recv() {
                self.next = (i + 1) % 2;
                return Some(msg);
            }
        }
        None
    }

    /// The heartbeat waiting right now, if any.
    pub(super) fn take_beat(&mut self) -> Option<Encoded> {
        if self.heartbeat.has_changed().unwrap_or(false) {
            return self.heartbeat.borrow_and_update().clone();
        }
        None
    }
}

/// Polls the queues starting with `next`; `None` when both are closed and empty.
fn poll_queues(
    queues: &mut [mpsc::Receiver<Encoded>; 2],
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<Option<Encoded>> {
    let mut open = false;
    for k in 0..2 {
        let i = (*next + k) % 2;
        match queues[i].poll_recv(cx) {
            Poll::Ready(Some(msg)) => {
                *next = (i + 1) % 2;
                return Poll::Ready(Some(msg));
            }
            Poll::Ready(None) => {}
            Poll::Pending => open = true,
        }
    }
    if open {
        Poll::Pending
    } else {
        Poll::Ready(None)
    }
}
