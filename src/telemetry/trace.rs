//! Trace context across MQTT: a task's span continues the caller's W3C `traceparent`, and
//! the task's own context goes back out in the result and to the guest.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// W3C trace context as carried by a message (`traceparent`, `tracestate`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: Option<String>,
    /// Vendor state that travels with it.
    pub tracestate: Option<String>,
}

/// Makes `span` a child of the caller's context in `headers`, when there is a valid one.
/// Call it before the span is first entered.
pub fn continue_trace(span: &Span, headers: &TraceHeaders) {
    let Some(traceparent) = &headers.traceparent else {
        return;
    };
    let mut carrier = HashMap::from([("traceparent".to_owned(), traceparent.clone())]);
    if let Some(state) = &headers.tracestate {
        carrier.insert("tracestate".to_owned(), state.clone());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if !cx.span().span_context().is_valid() {
        return tracing::debug!("ignoring an invalid traceparent");
    }
    if let Err(e) = span.set_parent(cx) {
        tracing::debug!(error = %e, "cannot continue the caller's trace");
    }
}

/// The span's own context, when tracing is on and the span is recorded.
pub fn span_context(span: &Span) -> Option<SpanContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The context to hand on for `span`: its own when tracing is on, else the caller's (so a
/// guest's outbound calls still join the caller's trace).
pub fn outgoing(span: &Span, incoming: &TraceHeaders) -> TraceHeaders {
    match span_context(span) {
        Some(sc) => TraceHeaders {
            traceparent: Some(format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )),
            tracestate: Some(sc.trace_state().header()).filter(|s| !s.is_empty()),
        },
        None => incoming.clone(),
    }
}

/// Links `span` to another span (an invocation to its deploy).
pub fn link(span: &Span, to: Option<SpanContext>) {
    if let Some(sc) = to {
        span.add_link(sc);
    }
}

/// Renames `span` as exported (a name known only after the span began).
pub fn rename(span: &Span, name: String) {
    span.context().span().update_name(name);
}

/// Marks `span` failed with `kind` (`error.type`) and `message` as the status description.
pub fn fail(span: &Span, kind: &'static str, message: &str) {
    span.set_attribute("error.type", kind);
    span.set_status(Status::error(message.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_the_incoming_context_is_handed_on() {
        let incoming = TraceHeaders {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            tracestate: None,
        };
        let span = tracing::info_span!("t");
        continue_trace(&span, &incoming);
        assert_eq!(span_context(&span), None);
        assert_eq!(outgoing(&span, &incoming), incoming);
        continue_trace(
            &span,
            &TraceHeaders {
                traceparent: Some("garbage".into()),
                tracestate: None,
            },
        );
    }
}
