//! The host side of the workload's `trace` interface (`wit/proplet.wit`): spans a guest
//! opens, nested under the task's `execute` span and exported with the proplet's own.
//!
//! Bounded per task: [`MAX_SPANS`] spans, [`MAX_ATTRIBUTES`] attributes and [`MAX_EVENTS`]
//! events per span, names and values cut to a length. Past a bound a call does nothing, so
//! a flood of spans costs the guest its fuel and time, never the proplet's memory.

use opentelemetry::KeyValue;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use wasmtime::component::Resource;

use super::workload::WorkloadContext;
use super::workload::propeller::proplet::trace::{Host, HostSpan};

/// Spans one task may open.
pub const MAX_SPANS: usize = 1_000;
/// Attributes one span may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Events one span may carry.
pub const MAX_EVENTS: usize = 128;
/// Longest span name, event name or attribute key, in bytes.
const MAX_NAME: usize = 256;
/// Longest attribute value or error message, in bytes.
const MAX_VALUE: usize = 4096;

/// The guest's spans: open ones by handle, and how many it opened in all.
#[derive(Debug, Default)]
pub struct GuestSpans {
    open: Vec<Option<Opened>>,
    opened: usize,
}

/// One open span.
#[derive(Debug)]
struct Opened {
    span: Span,
    attributes: usize,
    events: usize,
}

/// The resource type behind a guest's `span` handle (its index among the open spans, or
/// [`IGNORED`] past the bound).
pub struct GuestSpan;

/// The handle of a span not opened (past [`MAX_SPANS`]).
const IGNORED: u32 = u32::MAX;

impl GuestSpans {
    /// Opens a span named `name` under the innermost open one (or the current span, the
    /// task's `execute`).
    fn open(&mut self, name: &str) -> u32 {
        if self.opened >= MAX_SPANS {
            return IGNORED;
        }
        self.opened += 1;
        let parent = self.innermost().cloned().unwrap_or_else(Span::current);
        let span = tracing::info_span!(parent: &parent, "guest", otel.name = cut(name, MAX_NAME));
        let slot = self
            .open
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.open.len());
        let opened = Some(Opened {
            span,
            attributes: 0,
            events: 0,
        });
        match self.open.get_mut(slot) {
            Some(free) => *free = opened,
            None => self.open.push(opened),
        }
        u32::try_from(slot).unwrap_or(IGNORED)
    }

    /// The most recently opened span still open.
    fn innermost(&self) -> Option<&Span> {
        self.open.iter().rev().flatten().map(|o| &o.span).next()
    }

    fn get(&mut self, handle: u32) -> Option<&mut Opened> {
        let index = usize::try_from(handle).ok()?;
        self.open.get_mut(index)?.as_mut()
    }

    /// Ends a span (its handle was dropped).
    fn end(&mut self, handle: u32) {
        if let Some(slot) = usize::try_from(handle)
            .ok()
            .and_then(|i| self.open.get_mut(i))
        {
            *slot = None;
        }
        while matches!(self.open.last(), Some(None)) {
            self.open.pop();
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[..end]
}

impl Host for WorkloadContext {}

impl HostSpan for WorkloadContext {
    async fn new(&mut self, name: String) -> Resource<GuestSpan> {
        Resource::new_own(self.spans.open(&name))
    }

    async fn set_attribute(&mut self, span: Resource<GuestSpan>, key: String, value: String) {
        if let Some(o) = self.spans.get(span.rep())
            && o.attributes < MAX_ATTRIBUTES
        {
            o.attributes += 1;
            let key = cut(&key, MAX_NAME).to_owned();
            o.span.set_attribute(key, cut(&value, MAX_VALUE).to_owned());
        }
    }

    async fn add_event(&mut self, span: Resource<GuestSpan>, name: String) {
        if let Some(o) = self.spans.get(span.rep())
            && o.events < MAX_EVENTS
        {
            o.events += 1;
            o.span
                .add_event(cut(&name, MAX_NAME).to_owned(), Vec::<KeyValue>::new());
        }
    }

    async fn set_error(&mut self, span: Resource<GuestSpan>, message: String) {
        if let Some(o) = self.spans.get(span.rep()) {
            o.span.set_status(opentelemetry::trace::Status::error(
                cut(&message, MAX_VALUE).to_owned(),
            ));
        }
    }

    async fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        self.spans.end(span.rep());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_bounded_and_handles_reused() {
        let mut spans = GuestSpans::default();
        let a = spans.open("a");
        let b = spans.open("b");
        assert_eq!((a, b), (0, 1));
        spans.end(a);
        assert_eq!(spans.open("c"), 0, "a free slot is reused");
        for _ in 3..MAX_SPANS {
            assert_ne!(spans.open("x"), IGNORED);
        }
        assert_eq!(spans.open("one too many"), IGNORED);
        assert!(spans.get(IGNORED).is_none());
        spans.end(IGNORED);
    }

    #[test]
    fn names_are_cut_at_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
