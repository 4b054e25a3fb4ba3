//! Names that keep parallel tests apart on a shared broker.

use uuid::Uuid;

/// Kafka allows at most 249 characters; the suffix takes 9.
const MAX_PREFIX_LEN: usize = 240;

/// `"{prefix}-{8 random hex digits}"`, e.g. `orders-3f9c01ab`: a topic or consumer group name
/// no other test uses.
///
/// Tests share one broker and run in parallel, and the local broker forgets nothing until it
/// restarts: fixed names would see other tests' and earlier runs' messages.
///
/// # Panics
/// When `prefix` is not a valid start of a Kafka name: up to 240 characters out of
/// `[a-zA-Z0-9._-]`.
pub fn unique_name(prefix: &str) -> String {
    assert!(
        prefix.len() <= MAX_PREFIX_LEN && prefix.bytes().all(is_kafka_name_byte),
        "`{prefix}` is not a valid Kafka name prefix: use up to {MAX_PREFIX_LEN} of [a-zA-Z0-9._-]"
    );
    // A v4 UUID is random throughout; its first 8 hex digits are 32 random bits, plenty to keep
    // the names of one test run apart.
    let random = Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &random[..8])
}

fn is_kafka_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_valid_for_kafka() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("orders.v1")).collect();

        assert_eq!(names.len(), 1000);
        for name in &names {
            let suffix = name.strip_prefix("orders.v1-").unwrap();
            assert_eq!(suffix.len(), 8, "{name}");
            assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
            assert!(name.bytes().all(is_kafka_name_byte), "{name}");
        }
    }

    #[test]
    #[should_panic(expected = "`orders/v1` is not a valid Kafka name prefix")]
    fn invalid_prefixes_are_refused() {
        unique_name("orders/v1");
    }
}
