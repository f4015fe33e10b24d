//! What every request passes through before its handler: a refusal of control
//! characters in the path and query, the body-byte budget, and the headers
//! every answer carries.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use entitle_scim_protocol::ScimError;

use crate::error::ApiError;
use crate::extract::decoded_control_text;
use crate::state::AppState;

/// The largest request body any route reads.
pub const MAX_BODY: usize = 1024 * 1024;

/// `X-Content-Type-Options` of every answer: browsers never guess a type.
pub const NOSNIFF: &str = "nosniff";
/// `Cache-Control` of every API, agent and SCIM answer: they may carry
/// secrets (new tokens, enrollment keys) that no cache may keep.
pub const NO_STORE: &str = "no-store";

/// Refuses paths and queries with control characters (or bidirectional
/// overrides), reserves body budget, and adds the security headers.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let surface = Surface::of(&path);
    let query = request.uri().query().unwrap_or_default();
    let mut response = if decoded_control_text(&path)
        .or_else(|| decoded_control_text(query))
        .is_some()
    {
        surface.refuse_control_character()
    } else {
        match declared_body_length(&request) {
            0 => next.run(request).await,
            length => match state.body_budget.reserve(length).await {
                // Held until the answer is ready: the handler has read the body by then.
                Ok(_permit) => next.run(request).await,
                Err(error) => surface.error(error),
            },
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-content-type-options", HeaderValue::from_static(NOSNIFF));
    if surface != Surface::Portal {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
    response
}

/// How many body bytes a request may bring: its `Content-Length` (at most the
/// body limit), the whole limit for a chunked body, and none otherwise.
fn declared_body_length(request: &Request) -> usize {
    let headers = request.headers();
    if headers.contains_key(TRANSFER_ENCODING) {
        return MAX_BODY;
    }
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |length| length.min(MAX_BODY))
}

/// Which surface a path belongs to, for the form of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Api,
    Scim,
    Portal,
}

impl Surface {
    fn of(path: &str) -> Self {
        if path.starts_with("/scim/") {
            Surface::Scim
        } else if path.starts_with("/api/") || path.starts_with("/agent/") {
            Surface::Api
        } else {
            Surface::Portal
        }
    }

    /// A control character in a URL is a 400 where clients build URLs from
    /// data, and a plain 404 for pages, which no such path names.
    fn refuse_control_character(self) -> Response {
        let message = "the URL contains a control character (such as %00) or a bidirectional override (such as %E2%80%AE)";
        match self {
            Surface::Api => ApiError::bad_request("control_character", message).into_response(),
            Surface::Scim => scim_error(ScimError::invalid_value(message)),
            Surface::Portal => ApiError::not_found("page").into_response(),
        }
    }

    fn error(self, error: ApiError) -> Response {
        match self {
            Surface::Scim => {
                let message = error.body()["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                scim_error(ScimError::new(error.status().as_u16(), None, message))
            }
            Surface::Api | Surface::Portal => error.into_response(),
        }
    }
}

fn scim_error(error: ScimError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, error.to_json().to_string()).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_are_told_apart_by_prefix() {
        assert_eq!(Surface::of("/scim/v2/acme/Users"), Surface::Scim);
        assert_eq!(Surface::of("/api/v1/tenants"), Surface::Api);
        assert_eq!(Surface::of("/agent/v1/sync"), Surface::Api);
        assert_eq!(Surface::of("/t/acme"), Surface::Portal);
    }
}
