//! Text log fields with control characters escaped, so that nothing a guest (or a message)
//! puts in a field — a newline, a carriage return, an ANSI escape — can end the line early
//! or forge another log line.

use std::fmt;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// The default text field formatter, with every control character but tab escaped
/// (`\n`, `\r`, `\u{1b}`, …).
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut plain = String::new();
        self.0.format_fields(Writer::new(&mut plain), fields)?;
        write_escaped(&mut writer, &plain)
    }
}

/// Writes `text` with control characters (except tab) escaped: the text between them is
/// written as it is, a run at a time.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    let escaped = |c: char| c.is_control() && c != '\t';
    let mut rest = text;
    while let Some(at) = rest.find(escaped) {
        out.write_str(&rest[..at])?;
        let mut chars = rest[at..].chars();
        if let Some(c) = chars.next() {
            write!(out, "{}", c.escape_default())?;
        }
        rest = chars.as_str();
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_break_a_line() {
        let mut out = String::new();
        let forged =
            "ok\n2026-12-01T00:00:00Z  INFO proplet: task admitted\r\u{1b}[31mred\u{7}\tend";
        write_escaped(&mut out, forged).expect("writes");
        assert!(!out.contains(['\n', '\r', '\u{1b}', '\u{7}']), "{out}");
        assert_eq!(
            out,
            "ok\\n2026-12-01T00:00:00Z  INFO proplet: task admitted\\r\\u{1b}[31mred\\u{7}\tend"
        );
    }

    #[test]
    fn text_around_the_escapes_is_kept_whole() {
        let mut out = String::new();
        write_escaped(&mut out, "\nété\u{85}ünï\r").expect("writes");
        assert_eq!(out, "\\nété\\u{85}ünï\\r");
        let mut plain = String::new();
        write_escaped(&mut plain, "").expect("writes");
        assert_eq!(plain, "");
    }
}
