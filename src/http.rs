//! The HTTP boundary: the callback route, its answers, and nothing else.
//!
//! Only this module knows axum. Every answer that is not a 200 is an
//! [`ApiError`] with a JSON body `{"code": N, "message": "…"}`, mapped to
//! its status in one place.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;

use crate::events::BodyError;
use crate::ingest::{Ingest, IngestError, Source};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// The ingest path.
    pub ingest: Ingest,
    /// Largest accepted body.
    pub max_body_bytes: usize,
}

/// The router: `POST <path>` receives callbacks; everything else is a JSON error.
pub fn router(app: App, path: &str) -> Router {
    Router::new()
        .route(path, post(receive).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(app)
}

/// A non-200 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `code` of the JSON body: stable, for scripts.
    pub code: u32,
    /// The `message` of the JSON body: for people.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        let code = match error {
            BodyError::Empty => 40001,
            BodyError::InvalidJson(_) => 40002,
            BodyError::NotAnObject(_) => 40003,
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, error.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::Body(error) => error.into(),
            IngestError::Store(error) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                50300,
                format!("event not stored, send it again: {error}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "code": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        }
        response
    }
}

async fn receive(
    State(app): State<App>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (parts, body) = request.into_parts();
    let raw = read_body(&parts.headers, body, app.max_body_bytes).await?;
    app.ingest.accept(raw, Source::Push, remote).await?;
    Ok(Json(json!({ "code": 0 })))
}

/// Reads the whole body, refusing it with 413 as soon as it exceeds `limit`.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            41300,
            format!("body larger than the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            let over_limit = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(too_large())
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    40000,
                    format!("cannot read the body: {error}"),
                ))
            }
        }
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        40500,
        "only POST is accepted on the callback path",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, 40400, "no such path")
}
