//! Text log lines without the span context: `<time> <LEVEL> <target>: <message> <fields>`.
//!
//! Spans carry what traces need (the OpenTelemetry semantic attributes of a task), which
//! would repeat on every line of a text log; a line says which task it is about through
//! its own `task_id` field instead. JSON lines keep the trace and span ids.

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
