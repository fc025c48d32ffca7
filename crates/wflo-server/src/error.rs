//! The server's errors, and how every failure of a request becomes a JSON body with its kind.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use wflo_core::ErrorKind;

/// What can go wrong starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong.
    #[error("server configuration: {0}")]
    Config(String),
    /// The address could not be bound or the listener failed.
    #[error(
        "cannot listen on {addr}: {source}; choose another --bind address or stop what uses it"
    )]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Wflo operation failed.
    #[error(transparent)]
    Wflo(#[from] wflo_core::Error),
    /// The server could not be reached ([`crate::Client`]).
    #[error(
        "cannot reach the wflo server at {url}: {reason}; check WFLO_SERVER_URL and that `wflo serve` runs there"
    )]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server refused or failed a request ([`crate::Client`]): its status, error kind and
    /// message.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error kind (`invalid_input`, `not_found`, `conflict`, `forbidden`, …).
        kind: String,
        /// What went wrong and what to do.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request's failure as the client sees it: a status, a kind, and a message that says what
/// to do — never a stack of internal detail.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    pub(crate) retry_after: Option<u64>,
}

#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// An error: what kind, and what to do about it.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// `invalid_input`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `budget_exceeded`, `rejected`, `payload_too_large`, `unsupported_media_type`,
    /// `too_many_requests`, `unavailable`, `timeout` or `internal`.
    pub(crate) kind: String,
    /// What went wrong and what to do.
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to do this; its log has the details, try again later",
        )
    }
}

impl From<wflo_core::Error> for ApiError {
    fn from(e: wflo_core::Error) -> Self {
        let (status, kind) = match e.kind() {
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::BudgetExceeded => (StatusCode::UNPROCESSABLE_ENTITY, "budget_exceeded"),
            ErrorKind::Rejected => (StatusCode::CONFLICT, "rejected"),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorKind::Unavailable => {
                tracing::warn!(error = %e, "a service is unavailable");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a service the server needs is unavailable; try again shortly",
                );
            }
            _ => {
                tracing::error!(error = %e, "request failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, kind, e.to_string())
    }
}

impl From<wflo_core::db::Error> for ApiError {
    fn from(e: wflo_core::db::Error) -> Self {
        wflo_core::Error::from(e).into()
    }
}

impl From<wflo_core::RuntimeError> for ApiError {
    fn from(e: wflo_core::RuntimeError) -> Self {
        wflo_core::Error::from(e).into()
    }
}

impl From<wflo_core::cost::Error> for ApiError {
    fn from(e: wflo_core::cost::Error) -> Self {
        wflo_core::Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        resp
    }
}
