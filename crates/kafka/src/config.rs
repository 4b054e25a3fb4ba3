use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Connection settings and client defaults for every Kafka client a service creates.
///
/// The defaults live here, in one place, because each of them encodes a decision (see the
/// comments); [`KafkaConfig::set`] overrides any librdkafka property for all clients.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub client_id: String,
    overrides: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: client_id.into(),
            overrides: BTreeMap::new(),
        }
    }

    /// Overrides a librdkafka property for every client built from this config.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        config
    }

    fn with_overrides(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }

    pub(crate) fn producer(&self) -> ClientConfig {
        let mut config = self.base();
        config
            // Acknowledged by all in-sync replicas, and no duplicates or reordering from
            // librdkafka's own retries.
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            // librdkafka's default batching window adds up to several hundred ms per message.
            .set("linger.ms", "2")
            // How long one publish may take, retries included, before the caller sees an error.
            .set("message.timeout.ms", "30000")
            // Topics are provisioned with their partitions and settings (`ensure_topics`), never
            // created as a side effect of a metadata request with the broker's defaults: after a
            // broker lost its state that would bring a topic back with another partition count
            // (the local broker: 4 instead of 6), moving keys to other partitions, and hide the
            // loss from the producer that provisions it again.
            .set("allow.auto.create.topics", "false");
        self.with_overrides(config)
    }

    pub(crate) fn consumer(&self, group_id: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group_id)
            // A new group starts at the beginning: a read model or a task queue must see
            // everything, and "latest" is unreliable on some brokers (see docs).
            .set("auto.offset.reset", "earliest")
            // At-least-once: the runtime stores an offset only after its handler succeeded;
            // librdkafka then commits stored offsets in the background.
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            // The longest an empty fetch waits at the broker: librdkafka's 500 ms default would
            // add that much to each message that arrives while a consumer is caught up, and to
            // the first message after a join.
            .set("fetch.wait.max.ms", "20")
            // How long a silent member stays in its group. 6 s, not librdkafka's 45 s: a crashed
            // member's partitions move after 6 s. Not lower by default, because 6 s is Apache
            // Kafka's default `group.min.session.timeout.ms`: a default broker refuses a shorter
            // one (INVALID_SESSION_TIMEOUT) and the consumer never joins. It also sets the
            // length of a group join on the local broker (nisshi 0.6.0 holds each JoinGroup
            // until half of it has passed, in whole seconds: 3 s at 6 s, 1 s at 2 s), which is
            // why the local stack sets 2 s (`KAFKA_SESSION_TIMEOUT`, docs/local-kafka.md).
            // Apache Kafka's join does not depend on it: its first join waits
            // `group.initial.rebalance.delay.ms`, a broker setting.
            .set("session.timeout.ms", "6000")
            // A third of the shortest session timeout in use (2 s) or less, so that one lost
            // heartbeat never costs the membership.
            .set("heartbeat.interval.ms", "500")
            .set("enable.partition.eof", "false")
            // A topic that a broker lost and got back (a restarted broker without durable
            // state, or a topic deleted and created again) is seen at the next metadata refresh:
            // every 10 s instead of librdkafka's 5 minutes, so that a consumer rejoins promptly.
            .set("topic.metadata.refresh.interval.ms", "10000")
            // Never a topic by accident, with the broker's default settings: the runtime
            // provisions the topics it subscribes to (`ConsumerBuilder::provisioned_topic`).
            .set("allow.auto.create.topics", "false");
        self.with_overrides(config)
    }

    pub(crate) fn admin(&self) -> ClientConfig {
        self.with_overrides(self.base())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let config = KafkaConfig::new("localhost:9092", "svc").set("session.timeout.ms", "2000");
        let consumer = config.consumer("group");
        assert_eq!(consumer.get("session.timeout.ms"), Some("2000"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.producer().get("acks"), Some("all"));
        assert_eq!(
            config.producer().get("allow.auto.create.topics"),
            Some("false")
        );
    }
}
