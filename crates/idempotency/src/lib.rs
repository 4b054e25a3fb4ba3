#![doc = include_str!("../README.md")]

use std::time::Duration;

use anyhow::Context as _;
use axum::http::HeaderMap;
use platform::http::Problem;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The header's name, as the IETF draft spells it.
pub const HEADER: &str = "Idempotency-Key";
/// The longest key accepted; UUIDs (36) and the draft's examples are far shorter.
pub const MAX_KEY_LEN: usize = 255;
/// The table that records which of this crate's migrations ran, apart from the service's own.
pub const MIGRATIONS_TABLE: &str = "_idempotency_migrations";

/// Creates `idempotency_keys` in the service's database; idempotent, run at every start after
/// the service's own migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
        .run(pool)
        .await
        .context("Failed to run the idempotency migrations")
}

/// A valid `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's value, checked.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        if value.is_empty() || value.len() > MAX_KEY_LEN {
            return Err(KeyError::Invalid(format!(
                "must be 1 to {MAX_KEY_LEN} characters"
            )));
        }
        if !value.iter().all(u8::is_ascii_graphic) {
            return Err(KeyError::Invalid(
                "must be visible ASCII characters without spaces".to_owned(),
            ));
        }
        Ok(Self(String::from_utf8_lossy(value).into_owned()))
    }

    /// The request's key, if it sent one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, KeyError> {
        headers
            .get(HEADER)
            .map(|value| Self::parse(value.as_bytes()))
            .transpose()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a request's key is refused; both are the client's to fix, so both render as a 422.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key header {0}")]
    Invalid(String),
    #[error("the Idempotency-Key was used with another request")]
    Reused,
}

impl KeyError {
    /// The problem a service answers with: a 422 whose `errors` name the header.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Invalid(reason) => Problem::unprocessable(
                "The Idempotency-Key header is invalid; `errors` says why.",
                serde_json::json!({ HEADER: reason }),
            ),
            Self::Reused => Problem::unprocessable(
                "This Idempotency-Key was used with another request; a retry must repeat the \
                 request exactly. Use a new key for a new request.",
                serde_json::json!({ HEADER: "was used with another request" }),
            )
            .with_title("Idempotency-Key reused"),
        }
    }
}

/// What a key says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not used (or used longer than the TTL ago): create the resource.
    New,
    /// Used with the same request, which created this resource: answer with it.
    Created(Uuid),
    /// Used with another request: refuse ([`KeyError::Reused`]).
    OtherRequest,
}

/// The keys of one operation, such as `POST /orders`, remembered for `ttl`.
///
/// The request is identified by a fingerprint the caller gives: the request *as parsed*
/// (re-serialised), so that whitespace or field order do not make it another request.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    scope: &'static str,
    ttl: Duration,
}

impl IdempotencyKeys {
    pub fn new(scope: &'static str, ttl: Duration) -> Self {
        Self { scope, ttl }
    }

    /// How a key was used before, if it is still remembered. Call it before doing the work, so
    /// that a retry costs one read.
    pub async fn lookup(
        &self,
        conn: &mut PgConnection,
        key: &IdempotencyKey,
        request: &[u8],
    ) -> anyhow::Result<Seen> {
        let row: Option<(bool, Uuid)> = sqlx::query_as(
            "SELECT request_hash = md5($3), resource_id FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND created_at > now() - make_interval(secs => $4)",
        )
        .bind(self.scope)
        .bind(&key.0)
        .bind(request)
        .bind(self.ttl.as_secs_f64())
        .fetch_optional(conn)
        .await
        .context("Failed to look up the idempotency key")?;
        Ok(match row {
            None => Seen::New,
            Some((true, resource_id)) => Seen::Created(resource_id),
            Some((false, _)) => Seen::OtherRequest,
        })
    }

    /// Claims `key` for `resource_id` in the transaction that creates the resource, as its first
    /// statement; `false` when a live claim exists. A concurrent request with the same key
    /// waits here, on the primary key, until the first transaction ends: if it committed, the
    /// claim fails and the caller rolls back and answers with [`Self::lookup`]'s resource; if it
    /// rolled back (the request failed), the claim succeeds. A claim older than the TTL is taken
    /// over.
    pub async fn claim(
        &self,
        tx: &mut PgConnection,
        key: &IdempotencyKey,
        request: &[u8],
        resource_id: Uuid,
    ) -> anyhow::Result<bool> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, resource_id)
             VALUES ($1, $2, md5($3), $4)
             ON CONFLICT (scope, key) DO UPDATE
                 SET request_hash = EXCLUDED.request_hash, resource_id = EXCLUDED.resource_id,
                     created_at = now()
                 WHERE idempotency_keys.created_at <= now() - make_interval(secs => $5)",
        )
        .bind(self.scope)
        .bind(&key.0)
        .bind(request)
        .bind(resource_id)
        .bind(self.ttl.as_secs_f64())
        .execute(tx)
        .await
        .context("Failed to claim the idempotency key")?
        .rows_affected();
        Ok(claimed == 1)
    }
}

/// Deletes keys (of every scope) created longer than `ttl` ago, in chunks of `chunk` rows so
/// that no run holds many row locks at once, and returns how many. An expired key is already
/// ignored by [`IdempotencyKeys::lookup`]; deleting it only keeps the table small.
pub async fn purge_expired(pool: &PgPool, ttl: Duration, chunk: u32) -> anyhow::Result<u64> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys
                 WHERE created_at <= now() - make_interval(secs => $1)
                 LIMIT $2)",
        )
        .bind(ttl.as_secs_f64())
        .bind(i64::from(chunk.max(1)))
        .execute(pool)
        .await
        .context("Failed to delete expired idempotency keys")?
        .rows_affected();
        deleted += done;
        if done < u64::from(chunk.max(1)) {
            return Ok(deleted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::parse(b"0190f0a0-7c1e-75de-8591-9de961719be7").is_ok());
        assert!(IdempotencyKey::parse(&[b'k'; MAX_KEY_LEN]).is_ok());
        for bad in [
            &b""[..],
            &[b'k'; MAX_KEY_LEN + 1],
            b"a b",
            b"a\0b",
            "é".as_bytes(),
        ] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn both_errors_are_422_naming_the_header() {
        for error in [KeyError::Invalid("x".to_owned()), KeyError::Reused] {
            let problem = error.problem();
            assert_eq!(problem.status().as_u16(), 422);
            assert!(
                problem
                    .extension("errors")
                    .and_then(|errors| errors.get(HEADER))
                    .is_some(),
                "{problem:?}"
            );
        }
    }
}
