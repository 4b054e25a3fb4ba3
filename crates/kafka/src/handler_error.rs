//! Why a handler failed, and what the consumer does about it. Apart from the consumer runtime
//! because [`crate::Message`]'s decoding returns it too: both depend on this, not on each other.

use platform::db::ErrorClass;

/// Why a handler failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A dependency the handler needs is unavailable (the database is down or restarting): the
    /// message is tried again with capped backoff for as long as that lasts, without counting
    /// attempts. Never set aside: the message is not at fault.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
    /// A passing failure (a deadlock, a timeout): try again, up to the retry policy's attempts.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// The message can never succeed (it does not decode, it breaks a rule): do not retry.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    pub fn unavailable(error: impl Into<anyhow::Error>) -> Self {
        Self::Unavailable(error.into())
    }

    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(error.into())
    }

    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// An error from `?` is classified by what it carries: a database that cannot be reached is
/// [`HandlerError::Unavailable`], data the database refuses (SQLSTATE class 22: a number out of
/// range, a NUL byte) is [`HandlerError::Permanent`], and anything else is worth retrying.
impl From<anyhow::Error> for HandlerError {
    fn from(error: anyhow::Error) -> Self {
        match platform::db::classify(&error) {
            ErrorClass::Unavailable => Self::Unavailable(error),
            ErrorClass::InvalidData => Self::Permanent(error),
            ErrorClass::Other => Self::Retryable(error),
        }
    }
}
