//! `Idempotency-Key` on `POST /orders`: the same key with the same request places one order,
//! however often and however concurrently it is sent.
//!
//! The key is claimed in the order's own transaction (`idempotency_keys`, primary key), so the
//! key and the order commit together or not at all: a request that failed (422, 500) leaves no
//! key behind and may be retried as it is. A second request with a key that another transaction
//! is claiming waits for that transaction on the primary key, then finds the key taken.

use anyhow::Context as _;
use sqlx::PgConnection;
use uuid::Uuid;

/// The header's name, as the IETF draft spells it.
pub const HEADER: &str = "Idempotency-Key";
/// The longest key accepted; UUIDs (36) and the drafts' examples are far shorter.
pub const MAX_KEY_LEN: usize = 255;

/// A valid `Idempotency-Key` header value: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's value, checked; the reason when it is not acceptable.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        if value.is_empty() || value.len() > MAX_KEY_LEN {
            return Err(format!("must be 1 to {MAX_KEY_LEN} characters"));
        }
        if !value.iter().all(u8::is_ascii_graphic) {
            return Err("must be visible ASCII characters without spaces".to_owned());
        }
        Ok(Self(String::from_utf8_lossy(value).into_owned()))
    }
}

/// What a key says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not used (or used longer than the TTL ago): place the order.
    New,
    /// Used with the same request: answer with this order.
    Placed(Uuid),
    /// Used with another request: refuse.
    OtherRequest,
}

/// How a key was used before, if it is still remembered (`ttl` seconds).
pub async fn lookup(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    request: &[u8],
    ttl_seconds: f64,
) -> anyhow::Result<Seen> {
    let row: Option<(bool, Uuid)> = sqlx::query_as(
        "SELECT request_hash = md5($2), order_id FROM idempotency_keys
         WHERE key = $1 AND created_at > now() - make_interval(secs => $3)",
    )
    .bind(&key.0)
    .bind(request)
    .bind(ttl_seconds)
    .fetch_optional(conn)
    .await
    .context("Failed to look up the idempotency key")?;
    Ok(match row {
        None => Seen::New,
        Some((true, order_id)) => Seen::Placed(order_id),
        Some((false, _)) => Seen::OtherRequest,
    })
}

/// Claims `key` for `order_id` in the caller's transaction; `false` when a live claim exists
/// (committed by a concurrent request meanwhile: [`lookup`] again after rolling back). A claim
/// older than the TTL is taken over.
pub async fn claim(
    tx: &mut PgConnection,
    key: &IdempotencyKey,
    request: &[u8],
    order_id: Uuid,
    ttl_seconds: f64,
) -> anyhow::Result<bool> {
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, order_id) VALUES ($1, md5($2), $3)
         ON CONFLICT (key) DO UPDATE
             SET request_hash = EXCLUDED.request_hash, order_id = EXCLUDED.order_id,
                 created_at = now()
             WHERE idempotency_keys.created_at <= now() - make_interval(secs => $4)",
    )
    .bind(&key.0)
    .bind(request)
    .bind(order_id)
    .bind(ttl_seconds)
    .execute(tx)
    .await
    .context("Failed to claim the idempotency key")?
    .rows_affected();
    Ok(claimed == 1)
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
}
