//! Text log lines without the span context: `<time> <LEVEL> <target>: <message> <fields>`.
//!
//! Spans carry what traces need (the OpenTelemetry semantic attributes of a task), which
//! would repeat on every line of a text log; a line says which task it is about through
//! its own `task_id` field instead. JSON lines keep the trace and span ids.
//!
//! Since a line never shows a span, the text layer is never told of one ([`EventsOnly`]):
//! the fields of every span would otherwise be formatted into a string nobody reads.

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber, subscriber::Interest};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Passes events to the layer it wraps, and none of a span's life (new, record, enter,
/// exit, close): for a layer whose output never shows spans.
#[derive(Debug)]
pub struct EventsOnly<L>(pub L);

impl<S: Subscriber, L: Layer<S>> Layer<S> for EventsOnly<L> {
    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {}

    fn on_record(&self, _: &Id, _: &Record<'_>, _: Context<'_, S>) {}
}

/// The concise text format.
#[derive(Debug, Default)]
pub struct Concise;

impl<S, N> FormatEvent<S, N> for Concise
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} {}: ", meta.level(), meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
