//! The journal's request queue: one ordered queue, like a channel, except that a request
//! wakes the writer only when the writer needs it now.
//!
//! Under a burst most requests are changes nobody waits for (a job accepted, a result
//! delivered): they are committed with the next commit anyway, so while the writer already
//! has a commit coming (it waits with a deadline), queueing one costs no wake-up of its
//! thread. Nor does the flush before an acknowledgement, which may wait a millisecond
//! anyway: a writer with a deadline looks at its queue every millisecond. A request
//! somebody waits for at once, or one reaching an idle writer (no deadline), wakes it as a
//! channel would. Everything stays in the order it was sent: requests are taken only by
//! whoever holds the writer (its thread, or a job committing its own result).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::writer::{Op, Request};

/// Why [`Receiver::recv_timeout`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecvTimeoutError {
    /// Nothing came within the time given.
    Timeout,
    /// Every sender is gone and nothing is left.
    Disconnected,
}

/// The writer has stopped: the request was dropped (whoever waited for it hears so).
#[derive(Debug)]
pub(super) struct Stopped;

/// What a blocked writer wants to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Anything (it waits without a deadline).
    Any,
    /// Only a request somebody waits for at once (its deadline will bring it back for
    /// the rest).
    Waited,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Request>,
    senders: usize,
    receiver_gone: bool,
    /// Set while the writer is blocked.
    waiting: Option<Wake>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

impl Shared {
    /// The state, locked (a poisoned lock still holds a consistent queue: each change to it
    /// is a single push or pop).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half; cheap to clone. The writer sees the queue disconnected once every
/// sender is gone.
#[derive(Debug)]
pub(super) struct Sender(Arc<Shared>);

/// The writer's half.
#[derive(Debug)]
pub(super) struct Receiver(Arc<Shared>);

/// A new queue.
pub(super) fn channel() -> (Sender, Receiver) {
    let shared = Arc::new(Shared::default());
    shared.lock().senders = 1;
    (Sender(shared.clone()), Receiver(shared))
}

impl Request {
    /// Whether this request must wake a writer that waits with a deadline: somebody waits
    /// for it to be durable (or for its answer) at once. The flush before an
    /// acknowledgement does not: it may wait up to [`super::writer::COALESCE`] anyway, and
    /// such a writer looks at its queue at least that often.
    fn wakes(&self) -> bool {
        let acknowledgement = matches!(self.op, Op::Ack);
        (self.done.is_some() && !acknowledgement) || matches!(self.op, Op::Recall(..))
    }
}

impl Sender {
    /// Queues `request`, waking the writer if it needs it now.
    pub(super) fn send(&self, request: Request) -> Result<(), Stopped> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(Stopped);
        }
        let wake = match state.waiting {
            Some(Wake::Any) => true,
            Some(Wake::Waited) => request.wakes(),
            None => false,
        };
        state.queue.push_back(request);
        if wake {
            state.waiting = None;
            drop(state);
            self.0.ready.notify_one();
        }
        Ok(())
    }

    /// Moves everything queued onto the end of `out` if `take` says so of it (seeing the
    /// queue as it is), and says whether it did. Only whoever holds the writer may take
    /// requests, so that nothing is committed out of the order it was sent in.
    pub(super) fn drain_if(
        &self,
        out: &mut Vec<Request>,
        take: impl FnOnce(&VecDeque<Request>) -> bool,
    ) -> bool {
        let mut state = self.0.lock();
        let taken = take(&state.queue);
        if taken {
            drain(&mut state, out);
        }
        taken
    }
}

#[cfg(test)]
impl Sender {
    /// Whether the writer is blocked waiting for a request: a test sends once it is, so
    /// that what it sends meets a waiting writer, however busy the machine.
    pub(super) fn writer_waits(&self) -> bool {
        self.0.lock().waiting.is_some()
    }

    /// Blocks until the writer waits (see [`Sender::writer_waits`]).
    pub(super) fn until_the_writer_waits(&self) {
        while !self.writer_waits() {
            std::thread::yield_now();
        }
    }
}

/// Moves everything queued onto the end of `out`, in order, keeping the queue's room.
fn drain(state: &mut State, out: &mut Vec<Request>) {
    out.extend(state.queue.drain(..));
    state.queue.shrink_to(super::writer::KEPT_REQUESTS);
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        if state.senders == 0 && state.waiting.take().is_some() {
            drop(state);
            self.0.ready.notify_one();
        }
    }
}

impl Receiver {
    /// The next request, however long it takes; `None` once every sender is gone and the
    /// queue is empty.
    #[cfg(test)]
    pub(super) fn recv(&self) -> Option<Request> {
        self.next(None).ok()
    }

    /// The next request within `timeout`. Requests nobody waits for that were queued
    /// meanwhile do not cut the wait short; they are returned when it ends.
    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<Request, RecvTimeoutError> {
        self.next(Some(Instant::now() + timeout))
    }

    /// Moves everything queued right now onto the end of `out`, in order. The queue keeps
    /// its room, and so does `out`: neither is allocated again under a steady load.
    pub(super) fn drain_into(&self, out: &mut Vec<Request>) {
        drain(&mut self.0.lock(), out);
    }

    /// Waits until something is queued, without taking it, or until `deadline`.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> Result<(), RecvTimeoutError> {
        self.queued(deadline).map(drop)
    }

    fn next(&self, deadline: Option<Instant>) -> Result<Request, RecvTimeoutError> {
        let mut state = self.queued(deadline)?;
        // `queued` returns only with something queued.
        state.queue.pop_front().ok_or(RecvTimeoutError::Timeout)
    }

    /// The state, locked, once something is queued (or an error once `deadline` passes or
    /// every sender is gone with nothing queued).
    fn queued(&self, deadline: Option<Instant>) -> Result<MutexGuard<'_, State>, RecvTimeoutError> {
        let mut state = self.0.lock();
        loop {
            if !state.queue.is_empty() {
                return Ok(state);
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            state = match deadline {
                None => {
                    state.waiting = Some(Wake::Any);
                    self.0.ready.wait(state).unwrap_or_else(|e| e.into_inner())
                }
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    state.waiting = Some(Wake::Waited);
                    let woken = self.0.ready.wait_timeout(state, left);
                    woken.unwrap_or_else(|e| e.into_inner()).0
                }
            };
            state.waiting = None;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let orphans = {
            let mut state = self.0.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.queue)
        };
        // Whoever waits for a request still queued hears that the writer stopped (a
        // continuation runs now, with the queue unlocked).
        drop(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::Record;

    fn lazy(seq: u64) -> Request {
        Request {
            op: Op::Write(Record::Delivered(seq)),
            done: None,
        }
    }

    fn waited() -> (Request, tokio::sync::oneshot::Receiver<Result<(), String>>) {
        let (done, rx) = tokio::sync::oneshot::channel();
        let request = Request {
            op: Op::Flush,
            done: Some(crate::state::writer::Done::Waiter(done)),
        };
        (request, rx)
    }

    fn seq(request: &Request) -> Option<u64> {
        match request.op {
            Op::Write(Record::Delivered(seq)) => Some(seq),
            _ => None,
        }
    }

    #[test]
    fn requests_come_out_in_the_order_sent_from_every_sender() {
        let (tx, rx) = channel();
        let other = tx.clone();
        tx.send(lazy(1)).unwrap();
        other.send(waited().0).unwrap();
        other.send(lazy(2)).unwrap();
        tx.send(lazy(3)).unwrap();
        let first = rx.recv().unwrap();
        let mut rest = Vec::new();
        rx.drain_into(&mut rest);
        let rest: Vec<Option<u64>> = rest.iter().map(seq).collect();
        assert_eq!(seq(&first), Some(1));
        assert_eq!(rest, [None, Some(2), Some(3)]);
    }

    #[test]
    fn a_burst_far_larger_than_usual_leaves_no_large_queue_behind() {
        let (tx, rx) = channel();
        for seq in 0..20_000 {
            tx.send(lazy(seq)).unwrap();
        }
        let mut out = Vec::new();
        rx.drain_into(&mut out);
        assert!(
            out.iter().map(seq).eq((0..20_000).map(Some)),
            "all, in order"
        );
        let kept = rx.0.lock().queue.capacity();
        assert!(kept <= crate::state::writer::KEPT_REQUESTS, "{kept} kept");
    }

    #[test]
    fn a_change_nobody_waits_for_wakes_an_idle_writer() {
        let (tx, rx) = channel();
        let writer = std::thread::spawn(move || rx.recv().and_then(|r| seq(&r)));
        std::thread::sleep(Duration::from_millis(50));
        tx.send(lazy(7)).unwrap();
        assert_eq!(writer.join().unwrap(), Some(7));
    }

    /// Sends `request` to a writer waiting 300 ms for one; returns whether the request it
    /// got is an acknowledgement's flush, and whether it waited until the deadline.
    fn sent_to_a_writer_with_a_deadline(
        request: Request,
    ) -> (Result<bool, RecvTimeoutError>, bool) {
        let (tx, rx) = channel();
        let wait = Duration::from_millis(300);
        let writer = std::thread::spawn(move || {
            let began = Instant::now();
            let got = rx.recv_timeout(wait).map(|r| matches!(r.op, Op::Ack));
            (got, began.elapsed())
        });
        tx.until_the_writer_waits();
        tx.send(request).unwrap();
        let (got, took) = writer.join().unwrap();
        (got, took >= wait)
    }

    #[test]
    fn a_change_nobody_waits_for_waits_for_the_deadline_of_a_writer_that_has_one() {
        let (got, waited_whole) = sent_to_a_writer_with_a_deadline(lazy(4));
        assert_eq!(got, Ok(false));
        assert!(waited_whole, "returned before the deadline");
    }

    #[test]
    fn an_acknowledgements_flush_does_not_wake_a_writer_that_has_a_deadline() {
        let then = crate::state::writer::Then::new(|_| {});
        let ack = Request {
            op: Op::Ack,
            done: Some(crate::state::writer::Done::Then(then)),
        };
        let (got, waited_whole) = sent_to_a_writer_with_a_deadline(ack);
        assert_eq!(got, Ok(true));
        assert!(waited_whole, "returned before the deadline");
    }

    #[test]
    fn a_request_somebody_waits_for_wakes_a_writer_before_its_deadline() {
        let (tx, rx) = channel();
        let writer = std::thread::spawn(move || {
            let began = Instant::now();
            let got = rx.recv_timeout(Duration::from_secs(60)).map(|r| seq(&r));
            (got, began.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        tx.send(waited().0).unwrap();
        let (got, took) = writer.join().unwrap();
        assert_eq!(got, Ok(None));
        assert!(took < Duration::from_secs(30), "woken only after {took:?}");
    }

    #[test]
    fn the_writer_hears_when_the_last_sender_is_gone() {
        let (tx, rx) = channel();
        let other = tx.clone();
        tx.send(lazy(1)).unwrap();
        drop(tx);
        let writer = std::thread::spawn(move || {
            let first = rx.recv().and_then(|r| seq(&r));
            (first, rx.recv().is_none())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(other);
        assert_eq!(writer.join().unwrap(), (Some(1), true));
        let (tx, rx) = channel();
        drop(tx);
        let timed = rx.recv_timeout(Duration::from_secs(60));
        assert_eq!(timed.map(|r| seq(&r)), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn a_stopped_writer_refuses_requests_and_answers_those_it_dropped() {
        let (tx, rx) = channel();
        let (request, mut answer) = waited();
        tx.send(request).unwrap();
        drop(rx);
        let heard = answer.try_recv();
        assert!(
            matches!(
                heard,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed)
            ),
            "the waiter hears that nothing will come: {heard:?}"
        );
        assert!(tx.send(lazy(1)).is_err());
    }
}
