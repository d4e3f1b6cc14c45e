//! Results: one per task (or invocation), with its usage receipt, counted in the metrics,
//! marked on the task's span, and published under a `publish` span.
//!
//! A result that would not fit in one MQTT packet is never handed to the transport: the
//! manager gets an `output_limit` error for the id instead, so every id is answered.

use tokio::sync::oneshot;
use tracing::{Instrument as _, Span, info, warn};

use super::TaskError;
use super::receipt::Receipt;
use crate::protocol::{ErrorKind, InvokeResult, Outbound, Outcome, TaskResult, Topic};
use crate::runtime::TaskOutput;
use crate::state::{Journal, Unstored};
use crate::telemetry::{Metrics, trace};
use crate::transport::{Encoded, Publisher, TransportError};

/// Where a job's one answer goes: results and invocation results, stored in the durable
/// outbox, counted in the metrics.
pub(super) struct Answers {
    proplet_id: String,
    publisher: Publisher,
    metrics: Metrics,
    journal: Journal,
}

impl Answers {
    /// Answers as `proplet_id` through `publisher`, each stored in `journal`'s outbox first,
    /// counting in `metrics`.
    pub(super) fn new(
        proplet_id: String,
        publisher: Publisher,
        metrics: Metrics,
        journal: Journal,
    ) -> Self {
        Answers {
            proplet_id,
            publisher,
            metrics,
            journal,
        }
    }

    /// Our id on the wire.
    pub(super) fn proplet_id(&self) -> &str {
        &self.proplet_id
    }

    /// Publishes a task's one result with its receipt, and counts it. Returns whether the
    /// result is in the outbox, its job crossed out of the journal with it.
    ///
    /// The job's place is given back (`freed`) as the result is handed to the session,
    /// before it can reach the broker: a manager that reads the result finds the place free.
    pub(super) async fn result(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
        freed: Freed,
    ) -> Closed {
        let address = Address::new(id, None, Topic::Results).closing();
        self.task_answer(address, outcome, receipt, Some(freed))
            .await
    }

    /// Acknowledges a daemon that runs (an empty result): stored and published like a
    /// result, but the job stays in the journal until the daemon ends, so that a crash
    /// while it runs is still answered `interrupted` by the next process.
    pub(super) async fn running(&self, id: &str, receipt: &Receipt) {
        let address = Address::new(id, None, Topic::Results);
        let Closed(_) = self
            .task_answer(address, Ok(TaskOutput::default()), receipt, None)
            .await;
    }

    /// Answers a start that is no job of this process (refused, undecodable, or left by
    /// the previous one) with `error`: stored and published like a result, but it crosses
    /// nothing out of the journal, where a job of the same id may be running.
    pub(super) async fn refusal(&self, id: &str, error: TaskError, receipt: &Receipt) {
        let address = Address::new(id, None, Topic::Results);
        let Closed(_) = self.task_answer(address, Err(error), receipt, None).await;
    }

    async fn task_answer(
        &self,
        address: Address<'_>,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
        freed: Option<Freed>,
    ) -> Closed {
        let id = address.task;
        let outcome = receipt.seal(outcome_fields(id, outcome));
        let wrap = |outcome| {
            Outbound::Result(TaskResult {
                task_id: id.to_owned(),
                proplet_id: self.proplet_id.clone(),
                outcome,
            })
        };
        self.send(address, outcome, wrap, receipt, freed).await
    }

    /// Publishes an invocation's one result (`ids`: the task and invocation ids) with its
    /// receipt, and counts it. Returns whether it closed its job, and gives the job's place
    /// back, as [`Answers::result`].
    pub(super) async fn invocation(
        &self,
        ids: (&str, &str),
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
        freed: Freed,
    ) -> Closed {
        self.invocation_answer(ids, outcome, receipt, Some(freed))
            .await
    }

    /// Answers an invoke that is no job of this process with `error`, as
    /// [`Answers::refusal`] does a start.
    pub(super) async fn invocation_refusal(
        &self,
        ids: (&str, &str),
        error: TaskError,
        receipt: &Receipt,
    ) {
        let Closed(_) = self.invocation_answer(ids, Err(error), receipt, None).await;
    }

    async fn invocation_answer(
        &self,
        ids: (&str, &str),
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
        freed: Option<Freed>,
    ) -> Closed {
        let (task_id, invocation_id) = ids;
        let outcome = receipt.seal(outcome_fields(task_id, outcome));
        let wrap = |outcome| {
            Outbound::InvokeResult(InvokeResult {
                task_id: task_id.to_owned(),
                invocation_id: invocation_id.to_owned(),
                proplet_id: self.proplet_id.clone(),
                outcome,
            })
        };
        let address = Address {
            closes: freed.is_some(),
            ..Address::new(task_id, Some(invocation_id), Topic::InvokeResults)
        };
        self.send(address, outcome, wrap, receipt, freed).await
    }

    /// Fits the message `wrap` makes of `outcome` into one packet, counts what is answered,
    /// stores it, and queues it under a `publish` span.
    async fn send(
        &self,
        address: Address<'_>,
        outcome: Outcome,
        wrap: impl Fn(Outcome) -> Outbound,
        receipt: &Receipt,
        freed: Option<Freed>,
    ) -> Closed {
        let id = address.task;
        let (kind, encoded) = self.fit(id, outcome, wrap);
        self.metrics
            .task_finished(kind.map(ErrorKind::as_str), receipt.elapsed());
        let ms = u64::try_from(receipt.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(encoded) = encoded else {
            return Closed(false);
        };
        let closes = address.closes;
        let Kept(stored) = self.keep(address, encoded, freed).await;
        if kind.is_none() {
            // The one line of a task that went well (a failure was logged as a warning),
            // written once the answer is on its way: not on the round trip's path.
            info!(task_id = %id, ms, "task done");
        }
        Closed(stored && closes)
    }

    /// Publishes again an answer given before (`topic` suffix and `payload`, as stored).
    pub(super) async fn again(&self, id: &str, topic: &str, payload: Vec<u8>) {
        let Some(topic) = Topic::from_suffix(topic) else {
            return warn!(task_id = %id, topic, "an answer stored for an unknown topic");
        };
        let address = Address::new(id, None, topic);
        let Kept(_) = self
            .keep(address, Encoded::from_parts(topic, payload), None)
            .await;
    }

    /// Stores `encoded` in the durable outbox and publishes it once it is on disk; says
    /// whether it was stored. Should the disk fail, the answer still goes out, from memory
    /// only.
    ///
    /// Whoever commits it — the journal's thread, or this task itself when its result
    /// comes alone — hands it to the MQTT session as soon as the commit is done: the answer
    /// does not wait for this task to be woken and scheduled first. Only when the session's
    /// queue is full does this task wait for room itself.
    async fn keep(&self, address: Address<'_>, encoded: Encoded, freed: Option<Freed>) -> Kept {
        let entry = Unstored {
            topic: encoded.topic().suffix().to_owned(),
            task: address.task.to_owned(),
            invocation: address.invocation.map(str::to_owned),
            payload: encoded.payload().to_vec(),
            closes: address.closes,
        };
        let span = publish_span(address.topic);
        let (told, heard) = oneshot::channel();
        let publisher = self.publisher.clone();
        self.journal.store_then(entry, move |stored| {
            let (encoded, error) = match stored {
                Ok(seq) => (encoded.stored_as(seq), None),
                Err(e) => (encoded, Some(e)),
            };
            if let Some(freed) = freed {
                freed.free();
            }
            let unsent = span.in_scope(|| publisher.try_send_encoded(encoded).err());
            told.send(Handed {
                error,
                unsent,
                span,
            })
            .ok();
        });
        let Ok(handed) = heard.await else {
            warn!(task_id = %address.task, "the journal dropped an answer; it is in the outbox only");
            return Kept(false);
        };
        if let Some(e) = &handed.error {
            warn!(task_id = %address.task, error = %e, "the result could not be stored in the durable outbox; it is sent from memory only");
        }
        self.publish_unsent(address, handed.unsent, handed.span)
            .await;
        Kept(handed.error.is_none())
    }

    /// Waits for room for an answer the session's queue could not take at once.
    async fn publish_unsent(
        &self,
        address: Address<'_>,
        unsent: Option<(Encoded, TransportError)>,
        span: Span,
    ) {
        let encoded = match unsent {
            None => return,
            Some((encoded, TransportError::Full)) => encoded,
            Some((_, _closed)) => return lost(address),
        };
        let sent = self.publisher.send_encoded(encoded);
        if sent.instrument(span).await.is_err() {
            lost(address);
        }
    }

    /// Encodes the message `wrap` makes of `outcome`, checked against the MQTT packet limit.
    /// One that would not fit becomes an `output_limit` error; if even that would not fit
    /// (an absurdly long id), nothing can be sent and `None` is returned. Also returns the
    /// error kind that was finally answered.
    fn fit(
        &self,
        id: &str,
        outcome: Outcome,
        wrap: impl Fn(Outcome) -> Outbound,
    ) -> (Option<ErrorKind>, Option<Encoded>) {
        let kind = outcome.error_kind;
        let receipt = Outcome {
            usage: outcome.usage.clone(),
            digest: outcome.digest.clone(),
            traceparent: outcome.traceparent.clone(),
            ..Outcome::default()
        };
        let err = match self.publisher.encode(&wrap(outcome)) {
            Ok(encoded) => return (kind, Some(encoded)),
            Err(e) => e,
        };
        let text = err.to_string();
        warn!(task_id = %id, "result too large to publish: {text}");
        trace::fail(&Span::current(), ErrorKind::OutputLimit.as_str(), &text);
        match self.publisher.encode(&wrap(too_large(receipt, &err))) {
            Ok(encoded) => (Some(ErrorKind::OutputLimit), Some(encoded)),
            Err(e) => {
                warn!(task_id = %id, "no answer possible, even the error is too large: {e}");
                (Some(ErrorKind::OutputLimit), None)
            }
        }
    }
}

/// What the journal's thread did with an answer once its commit was known.
struct Handed {
    /// Why it is not stored, if it is not.
    error: Option<crate::state::StateError>,
    /// The answer, if the session's queue could not take it then, and why.
    unsent: Option<(Encoded, TransportError)>,
    /// The answer's `publish` span.
    span: Span,
}

/// Gives a job's place back, once: run as its last answer is handed to the session.
pub(super) struct Freed(Box<dyn FnOnce() + Send>);

impl Freed {
    pub(super) fn new(free: impl FnOnce() + Send + 'static) -> Self {
        Freed(Box::new(free))
    }

    fn free(self) {
        (self.0)();
    }
}

/// Whether an answer is in the durable outbox.
#[must_use]
struct Kept(bool);

fn lost(address: Address<'_>) {
    let topic = address.topic.suffix();
    warn!(task_id = %address.task, "{topic} lost: the MQTT session is closed");
}

/// Whether a job's last answer is in the durable outbox: then the commit that stored it also
/// crossed the job out of the journal, and nothing is left to write when the job ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) struct Closed(pub(super) bool);

/// Whom an answer is for, where it goes, and whether it closes the job.
#[derive(Debug, Clone, Copy)]
struct Address<'a> {
    task: &'a str,
    invocation: Option<&'a str>,
    topic: Topic,
    closes: bool,
}

impl<'a> Address<'a> {
    /// An answer that leaves the journal as it is.
    fn new(task: &'a str, invocation: Option<&'a str>, topic: Topic) -> Self {
        Address {
            task,
            invocation,
            topic,
            closes: false,
        }
    }

    /// The same address, for a job's last answer.
    fn closing(self) -> Self {
        Address {
            closes: true,
            ..self
        }
    }
}

/// Logs a failure (and marks the current span failed) and turns the run's outcome into
/// wire fields.
fn outcome_fields(id: &str, outcome: Result<TaskOutput, TaskError>) -> Outcome {
    match outcome {
        Ok(out) => Outcome::ok(out.result),
        Err(e) => {
            let kind = e.kind();
            let text = e.log_text();
            warn!(task_id = %id, kind = kind.as_str(), "task failed: {text}");
            trace::fail(&Span::current(), kind.as_str(), &text);
            Outcome::failed(kind, e.to_string())
        }
    }
}

/// An `output_limit` failure, because the result's message would be too large (`why`),
/// carrying the receipt of the original outcome.
fn too_large(receipt: Outcome, why: &TransportError) -> Outcome {
    let mut usage = receipt.usage;
    if let Some(usage) = usage.as_mut() {
        usage.limit = Some(ErrorKind::OutputLimit);
    }
    Outcome {
        usage,
        digest: receipt.digest,
        traceparent: receipt.traceparent,
        ..Outcome::failed(
            ErrorKind::OutputLimit,
            format!("the result cannot be published: {why}"),
        )
    }
}

/// The span of publishing a result.
fn publish_span(topic: Topic) -> Span {
    tracing::info_span!(
        "publish",
        otel.kind = "producer",
        messaging.system = "mqtt",
        messaging.operation.type = "send",
        messaging.destination.name = topic.suffix()
    )
}
