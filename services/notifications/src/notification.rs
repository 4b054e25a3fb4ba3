//! A notification, and the provider that delivers it (`NOTIFY_PROVIDER`): the webhook, or the
//! log.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::{StatusCode, Url, redirect};
use serde::{Deserialize, Serialize};
use task_queue::TaskError;
use uuid::Uuid;

use crate::config::ProviderConfig;

/// The header that lets the provider recognise a notification it was already given: the task
/// id, the same on every attempt.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What a notification is about; the `kind` column of `notifications` and the `kind` filter of
/// `GET /notifications`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Kind {
    OrderConfirmation,
    OrderCancelled,
    PaymentReminder,
    ExportReady,
    /// The daily digest of the day before's deliveries, sent by the `daily-digest` recurring
    /// schedule.
    DailyDigest,
}

/// The order or the export a notification is about (a daily digest is about neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Order(Uuid),
    Export(Uuid),
}

impl Reference {
    pub fn order_id(self) -> Option<Uuid> {
        match self {
            Self::Order(id) => Some(id),
            Self::Export(_) => None,
        }
    }

    pub fn export_id(self) -> Option<Uuid> {
        match self {
            Self::Export(id) => Some(id),
            Self::Order(_) => None,
        }
    }
}

/// What to send, and to whom: what a task becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    /// An e-mail address.
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub reference: Option<Reference>,
}

/// A message on its way out, with the id of the task that sends it. Its JSON is the body the
/// webhook receives: `order_id` or `export_id`, whichever applies; the other is left out.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub task_id: Uuid,
    pub kind: Kind,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_id: Option<Uuid>,
}

impl Notification {
    pub fn new(task_id: Uuid, message: Message) -> Self {
        Self {
            task_id,
            kind: message.kind,
            recipient: message.recipient,
            subject: message.subject,
            body: message.body,
            order_id: message.reference.and_then(Reference::order_id),
            export_id: message.reference.and_then(Reference::export_id),
        }
    }
}

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Only logs them, for running locally.
    Log,
    Webhook(Webhook),
}

impl Provider {
    pub fn new(config: &ProviderConfig) -> anyhow::Result<Self> {
        Ok(match config {
            ProviderConfig::Log => {
                tracing::warn!("NOTIFY_PROVIDER=log: notifications are logged, not sent");
                Self::Log
            }
            ProviderConfig::Webhook { url, timeout } => {
                Self::Webhook(Webhook::new(url.clone(), *timeout)?)
            }
        })
    }

    /// Hands the notification over. The error says whether trying again may help: the worker
    /// retries a [`TaskError::Retryable`] on its retry topics and dead-letters a
    /// [`TaskError::Permanent`] at once.
    pub async fn deliver(&self, notification: &Notification) -> Result<(), TaskError> {
        match self {
            Self::Log => {
                tracing::info!(
                    task_id = %notification.task_id,
                    kind = ?notification.kind,
                    recipient = %notification.recipient,
                    subject = %notification.subject,
                    body = %notification.body,
                    "notification (NOTIFY_PROVIDER=log: not sent)"
                );
                Ok(())
            }
            Self::Webhook(webhook) => webhook.deliver(notification).await,
        }
    }
}

/// A provider behind an HTTP endpoint that takes a notification as a JSON POST.
#[derive(Debug, Clone)]
pub struct Webhook {
    http: reqwest::Client,
    url: Url,
}

impl Webhook {
    /// `timeout` bounds each call, from connecting to reading the whole answer.
    pub fn new(url: Url, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A redirect of a POST would turn into a GET on the way; a 3xx is reported instead,
            // as the misconfiguration it is.
            .redirect(redirect::Policy::none())
            .build()
            .context("Failed to build the webhook's HTTP client")?;
        Ok(Self { http, url })
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), TaskError> {
        let response = self
            .http
            .post(self.url.clone())
            .header(IDEMPOTENCY_KEY, notification.task_id.to_string())
            .json(notification)
            .send()
            .await
            // No answer (refused, reset, timed out): the provider may be back soon.
            .map_err(|error| {
                TaskError::retryable(
                    anyhow::Error::new(error).context("The webhook did not answer"),
                )
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The provider's own words are the best clue in the dead-letter list.
        let answer = response.text().await.unwrap_or_default();
        let error = anyhow::anyhow!(
            "The webhook answered {status}: {}",
            truncate(answer.trim(), 200)
        );
        Err(if is_retryable(status) {
            TaskError::retryable(error)
        } else {
            TaskError::permanent(error)
        })
    }
}

/// Whether a call that got `status` (not a success) may succeed later, unchanged.
///
/// A 5xx is the provider's trouble, which passes. A 4xx says the request itself is wrong (an
/// address it refuses, a payload it cannot read): sending it again gives the same answer, so it
/// is permanent. Two 4xx mean "not now" rather than "not this", and are retried: 408 Request
/// Timeout and 429 Too Many Requests. A 3xx (redirects are not followed) is a misconfigured URL:
/// permanent.
pub fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn server_errors_and_not_now_answers_are_retried_client_errors_are_not() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(
                is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            assert!(
                !is_retryable(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn the_webhook_body_has_the_id_that_applies_and_not_the_other() {
        let order_id = Uuid::now_v7();
        let notification = Notification::new(
            Uuid::nil(),
            Message {
                kind: Kind::OrderCancelled,
                recipient: "ada@example.com".to_owned(),
                subject: "s".to_owned(),
                body: "b".to_owned(),
                reference: Some(Reference::Order(order_id)),
            },
        );

        assert_eq!(
            serde_json::to_value(&notification).unwrap(),
            json!({
                "task_id": Uuid::nil(),
                "kind": "order_cancelled",
                "recipient": "ada@example.com",
                "subject": "s",
                "body": "b",
                "order_id": order_id,
            })
        );
    }

    #[test]
    fn long_answers_are_cut() {
        assert_eq!(truncate("short", 200), "short");
        assert_eq!(truncate("ééééé", 3), "ééé…");
    }
}
