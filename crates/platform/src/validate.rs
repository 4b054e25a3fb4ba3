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

/// The longest e-mail address, in bytes (RFC 5321: a 256-octet path less its angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// The longest local part of an e-mail address, the part before the `@` (RFC 5321).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;

/// An e-mail address: [`text`] of at most [`MAX_EMAIL_LEN`] bytes with something before and
/// after its last `@`, the part before it at most [`MAX_EMAIL_LOCAL_LEN`] bytes. The mail server
/// is the judge of the rest.
pub fn email(address: &str) -> Result<(), String> {
    text(address, MAX_EMAIL_LEN)?;
    let plausible = address.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && local.len() <= MAX_EMAIL_LOCAL_LEN && !domain.is_empty()
    });
    if plausible {
        Ok(())
    } else {
        Err("must be an e-mail address such as name@example.com".to_owned())
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
    fn an_email_address_needs_something_on_both_sides_of_the_at() {
        assert_eq!(email("a@b"), Ok(()));
        assert_eq!(email("first.last+tag@sub.example.com"), Ok(()));
        let local = "a".repeat(MAX_EMAIL_LOCAL_LEN);
        let domain = "b".repeat(MAX_EMAIL_LEN - MAX_EMAIL_LOCAL_LEN - 1);
        assert_eq!(email(&format!("{local}@{domain}")), Ok(()));
        for address in [
            "ada",
            "@example.com",
            "ada@",
            &format!("a{local}@example.com"),
        ] {
            assert_eq!(
                email(address),
                Err("must be an e-mail address such as name@example.com".to_owned()),
                "{address:?}"
            );
        }
        assert_eq!(email(""), Err("must not be empty".to_owned()));
        assert_eq!(
            email(&format!("{local}@{domain}b")),
            Err("must be at most 254 bytes".to_owned())
        );
        assert_eq!(
            email("ada\0@example.com"),
            Err("must not contain control characters".to_owned())
        );
    }

    #[test]
    fn control_free_allows_any_other_text() {
        assert_eq!(control_free(""), Ok(()));
        assert_eq!(control_free("Grüße, 世界 🎉"), Ok(()));
        assert!(control_free("\0").is_err());
    }
}
