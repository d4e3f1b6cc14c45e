//! JSON log lines that carry the OpenTelemetry `trace_id` and `span_id` of the span they
//! were written in, so a log line leads to its trace.

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Wraps a JSON event formatter and appends `"trace_id"` and `"span_id"` to each line
/// written inside a traced span.
pub struct WithTraceIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| ids(&span.id()));
        match (ids, line.rfind('}')) {
            (Some((trace, span)), Some(end)) => {
                let (head, tail) = line.split_at(end);
                write!(
                    writer,
                    "{head},\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"{tail}"
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

/// The OpenTelemetry ids of a span, when the OpenTelemetry layer recorded it.
fn ids(id: &tracing::span::Id) -> Option<(String, String)> {
    let cx = tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d))?;
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
