//! Results: one per task (or invocation), with its usage receipt, counted in the metrics,
//! marked on the task's span, and published under a `publish` span.
//!
//! A result that would not fit in one MQTT packet is never handed to the transport: the
//! manager gets an `output_limit` error for the id instead, so every id is answered.

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
    pub(super) async fn result(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) -> Closed {
        let address = Address::new(id, None, Topic::Results).closing();
        self.task_answer(address, outcome, receipt).await
    }

    /// Acknowledges a daemon that runs (an empty result): stored and published like a
    /// result, but the job stays in the journal until the daemon ends, so that a crash
    /// while it runs is still answered `interrupted` by the next process.
    pub(super) async fn running(&self, id: &str, receipt: &Receipt) {
        let address = Address::new(id, None, Topic::Results);
        let Closed(_) = self
            .task_answer(address, Ok(TaskOutput::default()), receipt)
            .await;
    }

    /// Answers a start that is no job of this process (refused, undecodable, or left by
    /// the previous one) with `error`: stored and published like a result, but it crosses
    /// nothing out of the journal, where a job of the same id may be running.
    pub(super) async fn refusal(&self, id: &str, error: TaskError, receipt: &Receipt) {
        let address = Address::new(id, None, Topic::Results);
        let Closed(_) = self.task_answer(address, Err(error), receipt).await;
    }

    async fn task_answer(
        &self,
        address: Address<'_>,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
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
        self.send(address, outcome, wrap, receipt).await
    }

    /// Publishes an invocation's one result (`ids`: the task and invocation ids) with its
    /// receipt, and counts it. Returns whether it closed its job, as [`Answers::result`].
    pub(super) async fn invocation(
        &self,
        ids: (&str, &str),
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) -> Closed {
        self.invocation_answer(ids, outcome, receipt, true).await
    }

    /// Answers an invoke that is no job of this process with `error`, as
    /// [`Answers::refusal`] does a start.
    pub(super) async fn invocation_refusal(
        &self,
        ids: (&str, &str),
        error: TaskError,
        receipt: &Receipt,
    ) {
        let Closed(_) = self
            .invocation_answer(ids, Err(error), receipt, false)
            .await;
    }

    async fn invocation_answer(
        &self,
        ids: (&str, &str),
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
        closes: bool,
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
            closes,
            ..Address::new(task_id, Some(invocation_id), Topic::InvokeResults)
        };
        self.send(address, outcome, wrap, receipt).await
    }

    /// Fits the message `wrap` makes of `outcome` into one packet, counts what is answered,
    /// stores it, and queues it under a `publish` span.
    async fn send(
        &self,
        address: Address<'_>,
        outcome: Outcome,
        wrap: impl Fn(Outcome) -> Outbound,
        receipt: &Receipt,
    ) -> Closed {
        let id = address.task;
        let (kind, encoded) = self.fit(id, outcome, wrap);
        self.metrics
            .task_finished(kind.map(ErrorKind::as_str), receipt.elapsed());
        if kind.is_none() {
            // The one line of a task that went well (a failure was logged as a warning).
            let ms = u64::try_from(receipt.elapsed().as_millis()).unwrap_or(u64::MAX);
            info!(task_id = %id, ms, "task done");
        }
        let Some(encoded) = encoded else {
            return Closed(false);
        };
        let topic = address.topic;
        let (encoded, stored) = self.keep(address, encoded).await;
        let sent = self.publisher.send_encoded(encoded);
        if sent.instrument(publish_span(topic)).await.is_err() {
            warn!(task_id = %id, "{} lost: the MQTT session is closed", topic.suffix());
        }
        Closed(stored && address.closes)
    }

    /// Publishes again an answer given before (`topic` suffix and `payload`, as stored).
    pub(super) async fn again(&self, id: &str, topic: &str, payload: Vec<u8>) {
        let Some(topic) = Topic::from_suffix(topic) else {
            return warn!(task_id = %id, topic, "an answer stored for an unknown topic");
        };
        let (encoded, _) = self
            .keep(
                Address::new(id, None, topic),
                Encoded::from_parts(topic, payload),
            )
            .await;
        if self.publisher.send_encoded(encoded).await.is_err() {
            warn!(task_id = %id, "answer lost: the MQTT session is closed");
        }
    }

    /// Stores `encoded` in the durable outbox (on disk when this returns), and says whether
    /// it is. Should the disk fail, the answer still goes out, from memory only.
    async fn keep(&self, address: Address<'_>, encoded: Encoded) -> (Encoded, bool) {
        let entry = Unstored {
            topic: encoded.topic().suffix().to_owned(),
            task: address.task.to_owned(),
            invocation: address.invocation.map(str::to_owned),
            payload: encoded.payload().to_vec(),
            closes: address.closes,
        };
        match self.journal.store(entry).await {
            Ok(seq) => (encoded.stored_as(seq), true),
            Err(e) => {
                warn!(task_id = %address.task, error = %e, "the result could not be stored in the durable outbox; it is sent from memory only");
                (encoded, false)
            }
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
