//! The checks every service applies to the text a client sends, so that the same input gets
//! the same answer everywhere. Each returns the reason a service puts under the field's name in
//! its 422 problem's `errors`.

/// Text a client sends: not blank, at most `max_bytes` bytes, and no control characters.
///
/// The bound is in bytes because storage, Kafka messages and the body limit are. Control
/// characters belong in no id, name or address, and one of them, NUL, is refused by PostgreSQL
/// in `text`: left through, it would turn a client's mistake into a 500.
pub fn text(text: &str, max_bytes: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if text.len() > max_bytes {
        Err(format!("must be at most {max_bytes} bytes"))
    } else {
        control_free(text)
    }
}

/// Text without control characters (NUL, line breaks, escapes, `U+007F`–`U+009F`): for text
/// whose length a service bounds in its own way.
pub fn control_free(text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_bounded_in_bytes_and_free_of_control_characters() {
        assert_eq!(text("order-1", 7), Ok(()));
        assert_eq!(text("é", 2), Ok(()));
        assert_eq!(text("é", 1), Err("must be at most 1 bytes".to_owned()));
        assert_eq!(text(" \t", 10), Err("must not be empty".to_owned()));
        for control in ["a\0b", "a\nb", "a\u{1b}b", "a\u{7f}", "a\u{85}"] {
            assert_eq!(
                text(control, 10),
                Err("must not contain control characters".to_owned()),
                "{control:?}"
            );
        }
    }

    #[test]
    fn control_free_allows_any_other_text() {
        assert_eq!(control_free(""), Ok(()));
        assert_eq!(control_free("Grüße, 世界 🎉"), Ok(()));
        assert!(control_free("\0").is_err());
    }
}
