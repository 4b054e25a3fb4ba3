//! A test's view of a topic: what a service published, read back the way its consumers read it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kafka::{ConsumerBuilder, Handler, HandlerError, KafkaConfig, Message, RunningConsumer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{eventually, kafka_bootstrap_servers, unique_name};

/// One message read back from the topic.
#[derive(Debug, Clone)]
pub struct Published {
    pub key: String,
    /// The `message-type` header (`ProductChanged`, `Tombstone`, …).
    pub message_type: String,
    pub message_id: String,
    /// The JSON payload; `None` for a tombstone.
    pub payload: Option<Value>,
}

/// Reads a topic from the beginning in a consumer group of its own and keeps every message.
///
/// A topic named in a contract is shared by every test and every run: tests use keys of their
/// own ([`unique_name`]) and look only at those. A test that fails before [`TopicReader::stop`]
/// stops the consumer when the reader is dropped.
pub struct TopicReader {
    read: Arc<Mutex<Vec<Published>>>,
    shutdown: CancellationToken,
    consumer: Option<RunningConsumer>,
}

impl TopicReader {
    /// Starts reading `topic`, which must exist (the service under test provisions its topics
    /// when it starts, so start the service first). `name` names the client and the group.
    pub async fn start(topic: &str, name: &str) -> Self {
        let config = KafkaConfig::new(kafka_bootstrap_servers().await, name)
            // A short session makes the group join quick.
            .set("session.timeout.ms", "3000")
            .set("heartbeat.interval.ms", "300");
        let recorder = Recorder::default();
        let read = Arc::clone(&recorder.read);
        let shutdown = CancellationToken::new();
        let consumer = ConsumerBuilder::new(&config, unique_name(name))
            .topic(topic)
            .start(recorder, shutdown.clone())
            .await
            .unwrap_or_else(|error| panic!("the reader of {topic} does not start: {error:#}"));
        Self {
            read,
            shutdown,
            consumer: Some(consumer),
        }
    }

    /// Waits up to `deadline` until `count` messages with `key` were read and returns them in
    /// topic order (for one key, the order they were published in). More than `count` is a
    /// failure: a message published twice is a bug the test should see.
    pub async fn wait_for(&self, key: &str, count: usize, deadline: Duration) -> Vec<Published> {
        let what = format!("{count} messages with key {key}");
        let messages = eventually(deadline, &what, || async {
            let messages = self.of(key);
            (messages.len() >= count).then_some(messages)
        })
        .await;
        assert_eq!(messages.len(), count, "{messages:#?}");
        messages
    }

    /// What was read so far with `key`, in topic order.
    pub fn of(&self, key: &str) -> Vec<Published> {
        (self.read.lock().unwrap_or_else(PoisonError::into_inner))
            .iter()
            .filter(|message| message.key == key)
            .cloned()
            .collect()
    }

    /// Stops the consumer and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(consumer) = self.consumer.take() {
            consumer
                .wait()
                .await
                .expect("the topic reader stops cleanly");
        }
    }
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("read", &self.read.lock().map_or(0, |read| read.len()))
            .field("running", &self.consumer.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone, Default)]
struct Recorder {
    read: Arc<Mutex<Vec<Published>>>,
}

impl Handler for Recorder {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let payload = message
            .payload
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(HandlerError::permanent)?;
        let published = Published {
            key: message.key_str().unwrap_or_default().to_owned(),
            message_type: message.message_type().unwrap_or_default().to_owned(),
            message_id: message.message_id().unwrap_or_default().to_owned(),
            payload,
        };
        (self.read.lock().unwrap_or_else(PoisonError::into_inner)).push(published);
        Ok(())
    }
}
