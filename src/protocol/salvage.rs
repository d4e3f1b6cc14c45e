//! Reading the top-level string members of a JSON object that does not decode as a whole
//! (deeply nested, wrong types elsewhere, truncated after the member), without recursion,
//! so that a rejected start can still be answered by its `id`.

/// The string value of the top-level member `key` of the JSON object in `payload`, if it
/// appears (with a string value) before the scan meets something malformed.
pub fn top_level_string(payload: &[u8], key: &str) -> Option<String> {
    let mut scan = Scan {
        bytes: payload,
        at: 0,
    };
    scan.ws();
    scan.eat(b'{')?;
    loop {
        scan.ws();
        let name = scan.string()?;
        scan.ws();
        scan.eat(b':')?;
        scan.ws();
        if name == key && scan.peek() == Some(b'"') {
            return scan.string();
        }
        scan.skip_value()?;
        scan.ws();
        match scan.next()? {
            b',' => continue,
            _ => return None,
        }
    }
}

struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string literal, unescaped by serde_json.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.skip_string()?;
        serde_json::from_slice(&self.bytes[start..self.at]).ok()
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                _ => {}
            }
        }
    }

    /// Skips one value of any depth with a counter instead of recursion.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b'}' | b']' if depth == 0 => return Some(()),
                _ => self.at += 1,
            }
            if depth == 0 && matches!(self.peek(), Some(b',' | b'}')) {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_past_deep_nesting_and_bad_types() {
        let deep = format!(
            r#"{{"inputs":{}1{},"id":"t\"1","daemon":"yes"}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(
            top_level_string(deep.as_bytes(), "id").as_deref(),
            Some("t\"1")
        );
        assert_eq!(
            top_level_string(deep.as_bytes(), "daemon").as_deref(),
            Some("yes")
        );
        let nested_id = r#"{"env":{"id":"inner"},"id":"outer"}"#;
        assert_eq!(
            top_level_string(nested_id.as_bytes(), "id").as_deref(),
            Some("outer")
        );
        assert_eq!(top_level_string(br#"{"id":7}"#, "id"), None);
        assert_eq!(
            top_level_string(br#"{"id":"a""#, "id").as_deref(),
            Some("a")
        );
        assert_eq!(top_level_string(br#"{"x":[1,2"#, "id"), None);
        assert_eq!(top_level_string(b"", "id"), None);
        assert_eq!(top_level_string(b"[\"id\"]", "id"), None);
    }
}
