//! Extractors that answer bad input in the API's error format.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use entitle_core::{is_name_char, is_text_char};

use crate::error::ApiError;

/// A JSON body. The `Content-Type` is not insisted on, so a forgotten header in
/// a curl command is not an error; invalid JSON is a 400 that says what is wrong.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(request, state).await?;
        json_from_slice(&bytes).map(JsonBody)
    }
}

/// The body of a request, up to the body limit; 413 past it. Handlers that
/// authenticate from the head call this only once the caller is known.
pub async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is larger than 1 MiB",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })
}

/// Parses a JSON body, with a 400 that says what is wrong. A control
/// character in any string or key (NUL above all, which PostgreSQL cannot
/// store) is refused here, so that both back ends answer the same 400.
pub fn json_from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid for this call: {e}"),
        )
    };
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if let Some(text) = first_control_string(&document) {
        return Err(control_character_error(text));
    }
    serde_json::from_value(document).map_err(malformed)
}

/// The 400 for text that carries a control character.
pub fn control_character_error(text: &str) -> ApiError {
    let shown: String = text.chars().take(40).collect();
    ApiError::bad_request(
        "control_character",
        format!(
            "{shown:?} contains a control character (such as NUL) or a bidirectional override (such as U+202E); text fields may not"
        ),
    )
}

/// The first string or key of a JSON document that has a character no text
/// field may hold.
pub fn first_control_string(value: &serde_json::Value) -> Option<&str> {
    use serde_json::Value;
    match value {
        Value::String(text) => (!text.chars().all(is_text_char)).then_some(text.as_str()),
        Value::Array(items) => items.iter().find_map(first_control_string),
        Value::Object(fields) => fields.iter().find_map(|(key, value)| {
            if key.chars().all(is_text_char) {
                first_control_string(value)
            } else {
                Some(key.as_str())
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Query parameters, with a 400 in the API's format when they do not parse.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        query_from_str(parts.uri.query().unwrap_or_default()).map(QueryParams)
    }
}

/// Parses a query string, with a 400 that says what is wrong (a control
/// character in a decoded value among them).
pub fn query_from_str<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if let Some(text) = decoded_control_text(query) {
        return Err(control_character_error(&text));
    }
    serde_urlencoded_from_str(query)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query parameters: {e}")))
}

fn serde_urlencoded_from_str<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?,
    )
    .map(|q| q.0)
    .map_err(|e| e.body_text())
}

/// A percent-decoded part of a query string or path that holds a control
/// character (or a bidirectional one), if any.
pub fn decoded_control_text(encoded: &str) -> Option<String> {
    encoded
        .split(['&', '=', '/'])
        .map(|part| {
            let part = part.replace('+', " ");
            percent_decode(&part)
        })
        .find(|decoded| !decoded.chars().all(is_name_char))
}

/// Percent-decodes lossily: invalid UTF-8 becomes U+FFFD, which is no control
/// character and fails later where UTF-8 matters.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The client's IP address, when the server was started with connection info.
pub struct ClientAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts)))
    }
}

/// The client address of a request, as [`resolve_client`] found it.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedClient(pub std::net::IpAddr);

/// The client's IP address: the one [`resolve_client`] found (the TCP peer,
/// or the forwarded client when the peer is a trusted proxy). Every limit
/// keyed on an address reads it here.
pub fn client_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ResolvedClient>()
        .map(|client| client.0)
}

/// Finds the client address of a request once, from its connection and, when
/// the peer is a trusted proxy, its forwarding headers.
pub async fn resolve_client(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(peer) = peer {
        let headers = request.headers();
        let client = state.config.trusted_proxies.client(
            peer,
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.as_bytes()),
            headers.get_all("forwarded").iter().map(|v| v.as_bytes()),
        );
        request.extensions_mut().insert(ResolvedClient(client));
    }
    next.run(request).await
}
