use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaConfig;

/// A topic a service needs, provisioned at start by [`ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// Topic-level configuration, e.g. `("cleanup.policy", "compact")`.
    pub config: Vec<(String, String)>,
}

impl TopicSpec {
    /// Six partitions and replication factor one suit the single-broker local stack;
    /// production clusters override both.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            partitions: 6,
            replication: 1,
            config: Vec::new(),
        }
    }

    #[must_use]
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    #[must_use]
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication;
        self
    }

    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }
}

/// Creates the topics that do not exist yet. Idempotent: an existing topic is success (its
/// settings are not changed), so every replica can call it at start.
pub async fn ensure_topics(config: &KafkaConfig, specs: &[TopicSpec]) -> anyhow::Result<()> {
    create_missing(config, specs, None).await.map(drop)
}

/// [`ensure_topics`], bounded by `request_timeout` (librdkafka's default is `socket.timeout.ms`,
/// 60 s), returning the names of the topics it created, i.e. those that were missing.
pub(crate) async fn create_missing(
    config: &KafkaConfig,
    specs: &[TopicSpec],
    request_timeout: Option<Duration>,
) -> anyhow::Result<Vec<String>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = config
        .admin()
        .create()
        .context("Failed to create the Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            spec.config.iter().fold(
                NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(request_timeout);
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .context("Failed to create Kafka topics")?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, "created topic");
                created.push(name);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("Failed to create topic {name}: {code}"),
        }
    }
    Ok(created)
}
