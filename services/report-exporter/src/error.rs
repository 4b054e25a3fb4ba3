//! [`ApiError`]: everything a request can fail with, and the problem response for each.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use iterator::JobState;
use platform::http::Problem;
use uuid::Uuid;

/// Why a request failed. Each variant is one kind of `application/problem+json` response;
/// `?` turns any other error (`anyhow`) into [`ApiError::Internal`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: fields of the request break a rule; what is wrong, keyed by field.
    #[error("invalid export: {0:?}")]
    InvalidExport(BTreeMap<&'static str, String>),

    /// 404: no such export, or it finished longer than `RETENTION_PERIOD` ago and was deleted
    /// with its file. Not 410: after the purge nothing tells the two apart.
    #[error("export {0} not found")]
    ExportNotFound(Uuid),

    /// 409: the export's state does not allow the action (resuming a completed export).
    #[error("export {export_id} is {state}; it cannot {action}")]
    NotAllowed {
        export_id: Uuid,
        state: JobState,
        action: &'static str,
    },

    /// 409: the file is only there once the export completed.
    #[error("export {0} is {1}, not completed")]
    NotCompleted(Uuid, JobState),

    /// 422: the `Idempotency-Key` header is invalid, or was used with another request.
    #[error(transparent)]
    IdempotencyKey(#[from] idempotency::KeyError),

    /// 500: a bug, or an outage of the service's own database or disk. Logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<ApiError> for Problem {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::InvalidExport(errors) => Problem::unprocessable(
                "The export request is invalid; `errors` says what is wrong with which field.",
                serde_json::to_value(errors).expect("a map of strings is JSON"),
            ),
            ApiError::IdempotencyKey(error) => error.problem(),
            ApiError::ExportNotFound(export_id) => Problem::not_found(format!(
                "No export {export_id} exists. Finished exports are deleted, with their \
                 files, RETENTION_PERIOD after they finish."
            )),
            ApiError::NotAllowed {
                export_id,
                state,
                action,
            } => Problem::conflict(format!(
                "Export {export_id} is {state}; an export in that state cannot {action}."
            ))
            .with_extension("export_status", state.as_str()),
            ApiError::NotCompleted(export_id, state) => Problem::conflict(format!(
                "Export {export_id} is {state}; its file can be downloaded once it is completed."
            ))
            .with_extension("export_status", state.as_str()),
            ApiError::Internal(error) => outbox::PayloadTooLarge::problem_in(&error)
                .unwrap_or_else(|| Problem::internal(&error)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}
