//! The wire format: the headers a task message carries besides the standard ones
//! (`message_id` = task id, `message_type` = task name), and how they read back.

use chrono::{DateTime, SecondsFormat, Utc};
use kafka::{Message, MessageHeaders};
use uuid::Uuid;

/// Names of the task queue's own headers. Values are UTF-8 text; times are RFC 3339 in UTC.
pub mod header {
    /// Attempts so far: `0` when enqueued, incremented by every run of the handler.
    pub const TASK_ATTEMPT: &str = "task_attempt";
    /// When the task was enqueued (kept through retries; a replay enqueues anew).
    pub const TASK_ENQUEUED_AT: &str = "task_enqueued_at";
    /// On retry topics: the task must not run before this time.
    pub const TASK_DUE_AT: &str = "task_due_at";
    /// A task fired by a schedule: the time the schedule was due, which can lie well before the
    /// run (a scheduler that was down, a backlog, retries). Work that depends on *when* it was
    /// meant to happen ("yesterday's orders") takes its time from here, not from the clock.
    pub const TASK_SCHEDULED_FOR: &str = "task_scheduled_for";
    /// The error of the first failed attempt, and when it happened.
    pub const TASK_FIRST_ERROR: &str = "task_first_error";
    pub const TASK_FIRST_FAILED_AT: &str = "task_first_failed_at";
    /// The error of the latest failed attempt.
    pub const TASK_LAST_ERROR: &str = "task_last_error";

    /// On the dead-letter topic: where the message that failed for good was consumed (a retry
    /// topic if the task went through the retry levels).
    pub const DLQ_ORIGINAL_TOPIC: &str = "dlq_original_topic";
    pub const DLQ_ORIGINAL_PARTITION: &str = "dlq_original_partition";
    pub const DLQ_ORIGINAL_OFFSET: &str = "dlq_original_offset";
    /// Attempts in total (the same as `task_attempt` on the dead letter).
    pub const DLQ_ATTEMPTS: &str = "dlq_attempts";
    pub const DLQ_DEAD_LETTERED_AT: &str = "dlq_dead_lettered_at";
}

/// Error texts travel in headers; a handler that puts a whole HTTP response body into its error
/// must not make the message too large to publish.
const MAX_ERROR_BYTES: usize = 4096;

/// What the headers of a consumed task message say. Every field is optional on the wire:
/// messages come from other services and other versions, and a header that is missing or does
/// not parse reads as absent rather than failing the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) task_id: Option<Uuid>,
    pub(crate) task_name: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) enqueued_at: Option<DateTime<Utc>>,
    pub(crate) due_at: Option<DateTime<Utc>>,
    pub(crate) scheduled_for: Option<DateTime<Utc>>,
    pub(crate) first_error: Option<String>,
    pub(crate) first_failed_at: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
}

impl Envelope {
    pub(crate) fn read(message: &Message) -> Self {
        let time = |name| message.header_str(name).and_then(parse_time);
        let text = |name| message.header_str(name).map(str::to_owned);
        Self {
            task_id: message.message_id().and_then(|id| Uuid::parse_str(id).ok()),
            task_name: message.message_type().map(str::to_owned),
            attempts: message
                .header_str(header::TASK_ATTEMPT)
                .and_then(|attempts| attempts.parse().ok())
                .unwrap_or(0),
            // A task enqueued by something that does not set the header: the message's own
            // timestamp is when it was published.
            enqueued_at: time(header::TASK_ENQUEUED_AT).or(message.timestamp),
            due_at: time(header::TASK_DUE_AT),
            scheduled_for: time(header::TASK_SCHEDULED_FOR),
            first_error: text(header::TASK_FIRST_ERROR),
            first_failed_at: time(header::TASK_FIRST_FAILED_AT),
            last_error: text(header::TASK_LAST_ERROR),
        }
    }

    /// Remembers the first failure of the task for the headers it carries on, where the first
    /// of several attempts on one level (blocking retries) would otherwise be lost.
    pub(crate) fn record_failure(&mut self, error: &str, at: DateTime<Utc>) {
        self.first_error.get_or_insert_with(|| truncate(error));
        self.first_failed_at.get_or_insert(at);
    }
}

/// The headers of a newly enqueued task (also of a replayed one: it starts over, but keeps the
/// time its schedule was due).
pub(crate) fn enqueue_headers(
    task_id: Uuid,
    task_name: &str,
    now: DateTime<Utc>,
    scheduled_for: Option<DateTime<Utc>>,
) -> MessageHeaders {
    let headers = MessageHeaders::new(task_name)
        .message_id(task_id)
        .header(header::TASK_ATTEMPT, "0")
        .header(header::TASK_ENQUEUED_AT, format_time(now));
    match scheduled_for {
        Some(at) => headers.header(header::TASK_SCHEDULED_FOR, format_time(at)),
        None => headers,
    }
}

/// A task that failed, on its way to a retry topic or the dead-letter topic.
#[derive(Debug)]
pub(crate) struct FailedTask<'a> {
    pub(crate) task_id: Uuid,
    pub(crate) task_name: &'a str,
    pub(crate) envelope: &'a Envelope,
    /// Attempts so far, the failed one included.
    pub(crate) attempts: u32,
    pub(crate) error: String,
    pub(crate) failed_at: DateTime<Utc>,
}

impl FailedTask<'_> {
    /// Headers that carry the task's history to its next topic: the first error stays the
    /// first, the last becomes this one.
    fn headers(&self) -> MessageHeaders {
        let envelope = self.envelope;
        let mut headers = MessageHeaders::new(self.task_name)
            .message_id(self.task_id)
            .header(header::TASK_ATTEMPT, self.attempts.to_string())
            .header(
                header::TASK_FIRST_ERROR,
                envelope
                    .first_error
                    .clone()
                    .unwrap_or_else(|| truncate(&self.error)),
            )
            .header(
                header::TASK_FIRST_FAILED_AT,
                format_time(envelope.first_failed_at.unwrap_or(self.failed_at)),
            )
            .header(header::TASK_LAST_ERROR, truncate(&self.error));
        if let Some(enqueued_at) = envelope.enqueued_at {
            headers = headers.header(header::TASK_ENQUEUED_AT, format_time(enqueued_at));
        }
        if let Some(scheduled_for) = envelope.scheduled_for {
            headers = headers.header(header::TASK_SCHEDULED_FOR, format_time(scheduled_for));
        }
        headers
    }

    pub(crate) fn retry_headers(&self, due_at: DateTime<Utc>) -> MessageHeaders {
        self.headers()
            .header(header::TASK_DUE_AT, format_time(due_at))
    }

    pub(crate) fn dead_letter_headers(&self, consumed: &Message) -> MessageHeaders {
        self.headers()
            .header(header::DLQ_ORIGINAL_TOPIC, consumed.topic.clone())
            .header(
                header::DLQ_ORIGINAL_PARTITION,
                consumed.partition.to_string(),
            )
            .header(header::DLQ_ORIGINAL_OFFSET, consumed.offset.to_string())
            .header(header::DLQ_ATTEMPTS, self.attempts.to_string())
            .header(header::DLQ_DEAD_LETTERED_AT, format_time(self.failed_at))
    }
}

/// Microseconds: due times of retries a few milliseconds apart stay apart.
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// An id for a message that carries no valid task id (a foreign producer's, or garbage), stable
/// across redeliveries, so that dead-lettering and indexing it twice is harmless: FNV-1a
/// (128 bit) of where it was consumed, as a version 8 ("custom") UUID.
pub(crate) fn id_for_coordinates(topic: &str, partition: i32, offset: i64) -> Uuid {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    // A topic name never contains NUL, so the separator keeps (topic, partition) pairs apart.
    let bytes = topic
        .bytes()
        .chain([0])
        .chain(partition.to_be_bytes())
        .chain(offset.to_be_bytes());
    let hash = bytes.fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    });
    uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid()
}

/// At most [`MAX_ERROR_BYTES`], cut at a character boundary.
pub(crate) fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_ERROR_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use kafka::header as standard;

    use super::*;

    /// A consumed message with the headers the producer would have written.
    fn consumed(headers: &MessageHeaders) -> Message {
        let mut all = vec![
            (
                standard::MESSAGE_ID.to_owned(),
                headers.message_id.to_string(),
            ),
            (
                standard::MESSAGE_TYPE.to_owned(),
                headers.message_type.clone(),
            ),
        ];
        all.extend(headers.extra.iter().cloned());
        Message {
            topic: "notifications.tasks".to_owned(),
            partition: 2,
            offset: 41,
            key: None,
            payload: Some(b"{}".to_vec()),
            headers: all
                .into_iter()
                .map(|(name, value)| (name, value.into_bytes()))
                .collect(),
            timestamp: None,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 123_456_000).unwrap()
    }

    #[test]
    fn an_enqueued_task_reads_back_with_no_attempts() {
        let id = Uuid::now_v7();
        let envelope = Envelope::read(&consumed(&enqueue_headers(id, "SendEmail", at(0), None)));

        assert_eq!(
            envelope,
            Envelope {
                task_id: Some(id),
                task_name: Some("SendEmail".to_owned()),
                attempts: 0,
                enqueued_at: Some(at(0)),
                ..Envelope::default()
            }
        );
    }

    #[test]
    fn retries_keep_the_first_error_and_replace_the_last() {
        let id = Uuid::now_v7();
        let enqueued = Envelope::read(&consumed(&enqueue_headers(
            id,
            "SendEmail",
            at(0),
            Some(at(-60)),
        )));
        assert_eq!(enqueued.scheduled_for, Some(at(-60)));
        let first = FailedTask {
            task_id: id,
            task_name: "SendEmail",
            envelope: &enqueued,
            attempts: 1,
            error: "timeout".to_owned(),
            failed_at: at(1),
        };
        let on_retry_1 = Envelope::read(&consumed(&first.retry_headers(at(2))));
        assert_eq!(on_retry_1.attempts, 1);
        assert_eq!(on_retry_1.due_at, Some(at(2)));
        assert_eq!(on_retry_1.first_error.as_deref(), Some("timeout"));
        assert_eq!(on_retry_1.first_failed_at, Some(at(1)));
        assert_eq!(on_retry_1.last_error.as_deref(), Some("timeout"));

        let second = FailedTask {
            attempts: 2,
            error: "connection refused".to_owned(),
            failed_at: at(3),
            envelope: &on_retry_1,
            ..first
        };
        let dead = consumed(&second.dead_letter_headers(&consumed(&second.retry_headers(at(4)))));
        let on_dlq = Envelope::read(&dead);
        assert_eq!(on_dlq.attempts, 2);
        assert_eq!(on_dlq.first_error.as_deref(), Some("timeout"));
        assert_eq!(on_dlq.first_failed_at, Some(at(1)));
        assert_eq!(on_dlq.last_error.as_deref(), Some("connection refused"));
        assert_eq!(on_dlq.enqueued_at, Some(at(0)), "kept through every hop");
        assert_eq!(
            on_dlq.scheduled_for,
            Some(at(-60)),
            "kept through every hop"
        );
        assert_eq!(dead.header_str(header::DLQ_ATTEMPTS), Some("2"));
        assert_eq!(dead.header_str(header::DLQ_ORIGINAL_PARTITION), Some("2"));
        assert_eq!(dead.header_str(header::DLQ_ORIGINAL_OFFSET), Some("41"));
        assert_eq!(
            dead.header_str(header::DLQ_DEAD_LETTERED_AT)
                .and_then(parse_time),
            Some(at(3))
        );
    }

    #[test]
    fn missing_and_malformed_headers_read_as_absent() {
        let mut message = consumed(&MessageHeaders::new("SendEmail"));
        message.headers = vec![
            (standard::MESSAGE_ID.to_owned(), b"not-a-uuid".to_vec()),
            (header::TASK_ATTEMPT.to_owned(), b"many".to_vec()),
            (header::TASK_DUE_AT.to_owned(), b"tomorrow".to_vec()),
        ];
        message.timestamp = Some(at(7));

        let envelope = Envelope::read(&message);

        assert_eq!(envelope.task_id, None);
        assert_eq!(envelope.task_name, None);
        assert_eq!(envelope.attempts, 0);
        assert_eq!(envelope.due_at, None);
        assert_eq!(
            envelope.enqueued_at,
            Some(at(7)),
            "falls back to the message timestamp"
        );
    }

    #[test]
    fn ids_for_coordinates_are_stable_and_distinct() {
        let id = id_for_coordinates("tasks", 1, 10);
        assert_eq!(id, id_for_coordinates("tasks", 1, 10));
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(id, id_for_coordinates("tasks", 1, 11));
        assert_ne!(id, id_for_coordinates("tasks", 2, 10));
        assert_ne!(id, id_for_coordinates("tasks.retry.1", 1, 10));
    }

    #[test]
    fn long_errors_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
