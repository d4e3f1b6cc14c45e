//! Core-module arguments and results as text (docs/protocol.md §5.3–5.4).

use wasmtime::{Val, ValType};

/// Parses `text` as a value of `ty`.
///
/// Integers accept the signed range and, because seed-era managers send unsigned 64-bit
/// numbers, the unsigned range of the same width (reinterpreted: `4294967295` is `-1i32`).
/// Floats parse by value (`1` is `1.0`).
pub fn parse(text: &str, ty: &ValType) -> Result<Val, String> {
    let t = text.trim();
    let bad = |what: &str| format!("Failed to parse '{}' as {what}", shorten(text));
    match ty {
        ValType::I32 => t
            .parse::<i32>()
            .or_else(|_| t.parse::<u32>().map(|u| u as i32))
            .map(Val::I32)
            .map_err(|_| bad("i32")),
        ValType::I64 => t
            .parse::<i64>()
            .or_else(|_| t.parse::<u64>().map(|u| u as i64))
            .map(Val::I64)
            .map_err(|_| bad("i64")),
        ValType::F32 => t
            .parse::<f32>()
            .map(|f| Val::F32(f.to_bits()))
            .map_err(|_| bad("f32")),
        ValType::F64 => t
            .parse::<f64>()
            .map(|f| Val::F64(f.to_bits()))
            .map_err(|_| bad("f64")),
        other => Err(format!(
            "parameters of type {other} cannot be passed as text"
        )),
    }
}

/// At most 64 characters of `text`, for error messages that echo input.
fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Renders results: one value as its decimal text (`3.0f64` is `"3"`), none as `""`,
/// several separated by `,`.
pub fn render(values: &[Val]) -> String {
    values.iter().map(render_one).collect::<Vec<_>>().join(",")
}

fn render_one(v: &Val) -> String {
    match v {
        Val::I32(i) => i.to_string(),
        Val::I64(i) => i.to_string(),
        Val::F32(bits) => f32::from_bits(*bits).to_string(),
        Val::F64(bits) => f64::from_bits(*bits).to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_accept_signed_and_unsigned_ranges() {
        assert!(matches!(parse("10", &ValType::I32), Ok(Val::I32(10))));
        assert!(matches!(parse("-1", &ValType::I32), Ok(Val::I32(-1))));
        assert!(matches!(
            parse("4294967295", &ValType::I32),
            Ok(Val::I32(-1))
        ));
        assert!(parse("4294967296", &ValType::I32).is_err());
        assert!(matches!(
            parse("18446744073709551615", &ValType::I64),
            Ok(Val::I64(-1))
        ));
        assert_eq!(
            parse("ten", &ValType::I32).unwrap_err(),
            "Failed to parse 'ten' as i32"
        );
        assert!(parse("1e3", &ValType::I64).is_err());
        let long = "9".repeat(1000);
        assert_eq!(
            parse(&long, &ValType::I32).unwrap_err().len(),
            "Failed to parse '' as i32".len() + 64 + "…".len()
        );
    }

    #[test]
    fn floats_parse_by_value_and_render_plainly() {
        let v = parse("1", &ValType::F64).unwrap();
        assert_eq!(render(&[v]), "1");
        let v = parse("2.5", &ValType::F32).unwrap();
        assert_eq!(render(&[v]), "2.5");
        assert_eq!(render(&[Val::F64(3.0f64.to_bits())]), "3");
        assert_eq!(render(&[]), "");
        assert_eq!(render(&[Val::I32(1), Val::I64(2)]), "1,2");
    }
}
