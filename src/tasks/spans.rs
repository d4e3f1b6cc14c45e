//! The root spans of tasks and invocations (messaging consumer spans, one trace per task),
//! continuing the caller's trace when the message carries one.

use tracing::Span;

use crate::protocol::{InvokeRequest, StartRequest, Topic, TraceFields};
use crate::telemetry::TraceHeaders;
use crate::telemetry::trace;

/// The trace headers of a message.
pub(super) fn headers(fields: &TraceFields) -> TraceHeaders {
    TraceHeaders {
        traceparent: fields.traceparent.clone(),
        tracestate: fields.tracestate.clone(),
    }
}

/// `seed` for starts without targeting (seed-era managers), `latest` otherwise.
fn generation(req: &StartRequest) -> &'static str {
    if req.target.proplet_id.is_some() {
        "latest"
    } else {
        "seed"
    }
}

/// A messaging consumer span `$name` for a message that arrived on `$topic`, with `$fields`.
macro_rules! consumer_span {
    ($name:literal, $topic:expr, $($fields:tt)*) => {
        tracing::info_span!(
            $name,
            otel.kind = "consumer",
            messaging.system = "mqtt",
            messaging.operation.type = "process",
            messaging.destination.name = $topic.suffix(),
            $($fields)*
        )
    };
}

/// The root span of a start.
pub(super) fn task(req: &StartRequest, proplet_id: &str) -> Span {
    let span = consumer_span!(
        "task",
        Topic::Start,
        otel.name = %display_name("task", &req.name),
        messaging.message.id = %req.id,
        task.id = %req.id,
        task.name = %req.name,
        task.daemon = req.daemon,
        task.latent = req.latent,
        proplet.id = %proplet_id,
        manager.generation = generation(req),
    );
    trace::continue_trace(&span, &headers(&req.trace));
    span
}

/// The root span of a message that could not be decoded but names a task.
pub(super) fn rejected(topic: Topic, id: &str, proplet_id: &str) -> Span {
    unrun("task (undecodable)", topic, id, proplet_id)
}

/// The root span of the answer to a task a previous process accepted and never answered.
pub(super) fn interrupted(id: &str, proplet_id: &str) -> Span {
    unrun("task (interrupted)", Topic::Start, id, proplet_id)
}

/// The root span of the answer to a task that never ran.
fn unrun(name: &'static str, topic: Topic, id: &str, proplet_id: &str) -> Span {
    consumer_span!(
        "task",
        topic,
        otel.name = name,
        task.id = %id,
        proplet.id = %proplet_id,
    )
}

/// The root span of an invocation. Its latent task may still be deploying: once known,
/// [`invoked`] names the span after it and links it to the deploy.
pub(super) fn invoke(req: &InvokeRequest, proplet_id: &str) -> Span {
    let span = consumer_span!(
        "invoke",
        Topic::Invoke,
        otel.name = "invoke",
        messaging.message.id = %req.invocation_id,
        task.id = %req.id,
        invocation.id = %req.invocation_id,
        proplet.id = %proplet_id,
    );
    trace::continue_trace(&span, &headers(&req.trace));
    span
}

/// Names an invocation's span after its latent task's function `name`, and links it to
/// the span of the task's deploy.
pub(super) fn invoked(span: &Span, name: &str, deploy: Option<opentelemetry::trace::SpanContext>) {
    trace::rename(span, display_name("invoke", name));
    trace::link(span, deploy);
}

fn display_name(kind: &str, name: &str) -> String {
    if name.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} {name}")
    }
}
