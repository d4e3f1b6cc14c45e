//! Results: one per task (or invocation), with its usage receipt, counted in the metrics,
//! marked on the task's span, and published under a `publish` span.

use tracing::{Instrument as _, Span, warn};

use super::TaskError;
use super::manager::Shared;
use super::receipt::Receipt;
use crate::protocol::{ErrorKind, InvokeResult, Outbound, Outcome, TaskResult, Topic};
use crate::runtime::TaskOutput;
use crate::telemetry::trace;

impl Shared {
    /// Logs a failure (and marks the current task span failed) and turns the run's outcome
    /// into wire fields.
    pub(super) fn outcome(id: &str, outcome: Result<TaskOutput, TaskError>) -> Outcome {
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

    /// Publishes a task's one result with its receipt, and counts it.
    pub(super) async fn publish_result(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) {
        let outcome = receipt.seal(Self::outcome(id, outcome));
        let kind = outcome.error_kind.map(ErrorKind::as_str);
        self.metrics.task_finished(kind, receipt.elapsed());
        let msg = TaskResult {
            task_id: id.to_owned(),
            proplet_id: self.proplet_id.clone(),
            outcome,
        };
        let publish = publish_span(Topic::Results);
        let sent = self.publisher.send(Outbound::Result(msg));
        if sent.instrument(publish).await.is_err() {
            warn!(task_id = %id, "result lost: the MQTT session is closed");
        }
    }

    /// Publishes an invocation's result (already sealed with its receipt).
    pub(super) async fn publish_invoke(
        &self,
        task_id: String,
        invocation_id: String,
        outcome: Outcome,
    ) {
        let msg = InvokeResult {
            task_id,
            invocation_id,
            proplet_id: self.proplet_id.clone(),
            outcome,
        };
        let sent = self.publisher.send(Outbound::InvokeResult(msg));
        if sent
            .instrument(publish_span(Topic::InvokeResults))
            .await
            .is_err()
        {
            warn!("invoke result lost: the MQTT session is closed");
        }
    }

    /// An invocation's outcome, sealed with its receipt and counted.
    pub(super) fn invoke_outcome(
        &self,
        id: &str,
        outcome: Result<TaskOutput, TaskError>,
        receipt: &Receipt,
    ) -> Outcome {
        let outcome = receipt.seal(Self::outcome(id, outcome));
        let kind = outcome.error_kind.map(ErrorKind::as_str);
        self.metrics.task_finished(kind, receipt.elapsed());
        outcome
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
