//! Bookkeeping for one assigned partition: which offsets are in flight, which message of a key
//! may run, and how far the partition can be committed. Pure logic, no I/O.

use std::collections::{BTreeSet, HashMap, VecDeque};

use crate::Message;

#[derive(Debug, Default)]
pub(crate) struct PartitionTracker {
    /// Offsets received and not yet completed (running or waiting behind their key).
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next_offset: Option<i64>,
    /// Keys with a running message, and the messages of that key that wait behind it.
    lanes: HashMap<Vec<u8>, VecDeque<Message>>,
    /// The last offset handed to the consumer for commit.
    stored: Option<i64>,
}

impl PartitionTracker {
    /// Takes a new message. Returns it if it can start now: its key has nothing running.
    /// Otherwise it waits in its key's lane and [`Self::complete`] hands it out later.
    pub(crate) fn accept(&mut self, message: Message) -> Option<Message> {
        self.pending.insert(message.offset);
        self.next_offset = Some(
            self.next_offset
                .map_or(message.offset + 1, |n| n.max(message.offset + 1)),
        );
        // Messages without a key have no order to keep.
        let Some(key) = message.key.clone() else {
            return Some(message);
        };
        if let Some(waiting) = self.lanes.get_mut(&key) {
            waiting.push_back(message);
            return None;
        }
        self.lanes.insert(key, VecDeque::new());
        Some(message)
    }

    /// Marks a message as handled. Returns the next message of the same key, which the caller
    /// runs next; `None` frees the key.
    pub(crate) fn complete(&mut self, offset: i64, key: Option<&[u8]>) -> Option<Message> {
        self.pending.remove(&offset);
        let key = key?;
        let waiting = self.lanes.get_mut(key)?;
        let next = waiting.pop_front();
        if next.is_none() {
            self.lanes.remove(key);
        }
        next
    }

    /// The offset to commit: everything before it is handled. Never passes an unfinished
    /// message, however many later ones finished.
    pub(crate) fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next_offset)
    }

    /// The committable offset if it moved since the last call.
    pub(crate) fn take_new_commit(&mut self) -> Option<i64> {
        let committable = self.committable()?;
        if self.stored == Some(committable) {
            return None;
        }
        self.stored = Some(committable);
        Some(committable)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, key: Option<&str>) -> Message {
        Message {
            topic: "t".into(),
            partition: 0,
            offset,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    #[test]
    fn same_key_waits_for_the_running_message() {
        let mut tracker = PartitionTracker::default();
        assert!(tracker.accept(message(0, Some("a"))).is_some());
        assert!(
            tracker.accept(message(1, Some("b"))).is_some(),
            "other keys run in parallel"
        );
        assert!(tracker.accept(message(2, Some("a"))).is_none(), "a is busy");
        assert!(tracker.accept(message(3, Some("a"))).is_none());

        assert_eq!(tracker.complete(0, Some(b"a")).map(|m| m.offset), Some(2));
        assert_eq!(tracker.complete(2, Some(b"a")).map(|m| m.offset), Some(3));
        assert!(tracker.complete(3, Some(b"a")).is_none());
        assert!(
            tracker.accept(message(4, Some("a"))).is_some(),
            "lane is free again"
        );
    }

    #[test]
    fn commit_never_passes_an_unfinished_message() {
        let mut tracker = PartitionTracker::default();
        for offset in 10..14 {
            tracker.accept(message(offset, None));
        }
        assert_eq!(tracker.committable(), Some(10));
        tracker.complete(11, None);
        tracker.complete(12, None);
        assert_eq!(tracker.committable(), Some(10), "10 still runs");
        tracker.complete(10, None);
        assert_eq!(tracker.committable(), Some(13));
        tracker.complete(13, None);
        assert_eq!(
            tracker.committable(),
            Some(14),
            "all done: one past the last"
        );
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn take_new_commit_reports_each_advance_once() {
        let mut tracker = PartitionTracker::default();
        assert_eq!(tracker.take_new_commit(), None, "nothing received");
        tracker.accept(message(0, None));
        assert_eq!(tracker.take_new_commit(), Some(0));
        assert_eq!(tracker.take_new_commit(), None);
        tracker.complete(0, None);
        assert_eq!(tracker.take_new_commit(), Some(1));
    }
}
