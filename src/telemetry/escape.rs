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

/// Writes `text` with control characters (except tab) escaped.
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            write!(out, "{}", c.escape_default())?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
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
}
