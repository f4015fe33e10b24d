//! The one mapping from failures to HTTP status codes and the JSON error body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use entitle_store::StoreError;
use serde_json::json;

/// An error answered to an API caller as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    // Boxed, so that an error stays small: the agent lane keeps two results
    // in every parsed request head.
    detail: Box<Detail>,
}

/// What an error says, and the request field it concerns, if it is one field.
#[derive(Debug, Clone)]
struct Detail {
    message: String,
    field: Option<String>,
    /// Seconds the caller should wait before asking again (`Retry-After`).
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: Box::new(Detail {
                message: message.into(),
                field: None,
                retry_after_s: None,
            }),
        }
    }

    /// The same error, naming the request field it concerns (e.g. `name`,
    /// `posture.0.value`), so that a form can show it beside that field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.detail.field = Some(field.into());
        self
    }

    /// The same error, answered with `Retry-After: seconds` (a busy server
    /// tells its callers when to come back, so that they do not all retry at once).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.detail.retry_after_s = Some(seconds);
        self
    }

    /// The `Retry-After` seconds, if the error has them.
    pub fn retry_after(&self) -> Option<u64> {
        self.detail.retry_after_s
    }

    /// 500: the server's fault, logged by the caller; the client learns only
    /// that it was not theirs.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it has been logged",
        )
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no token, or one that is not valid.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the caller's role is too weak.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: unknown, or another tenant's (the same answer, so names do not leak).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 422: valid JSON with an invalid meaning.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body: `{"error": {"code", "message"}}`, plus `field` when
    /// the error concerns one field of the request.
    pub fn body(&self) -> serde_json::Value {
        let Detail { message, field, .. } = &*self.detail;
        match field {
            Some(field) => {
                json!({"error": {"code": self.code, "message": message, "field": field}})
            }
            None => json!({"error": {"code": self.code, "message": message}}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after() {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what } => ApiError::not_found(what),
            StoreError::Duplicate { .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate", error.to_string())
            }
            StoreError::Stale { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "stale_version",
                error.to_string(),
            ),
            StoreError::Invalid(ref rule) => {
                use entitle_core::SaveError as E;
                let (code, field) = match rule {
                    E::GroupsWhileEnabledByDefault { .. } => {
                        ("groups_while_enabled_by_default", None)
                    }
                    E::UnknownUserGroups { .. } => ("unknown_user_groups", Some("user_groups")),
                    E::UnknownDeviceGroups { .. } => {
                        ("unknown_device_groups", Some("device_groups"))
                    }
                    E::UnknownExcludedUserGroups { .. } => {
                        ("unknown_user_groups", Some("exclude_user_groups"))
                    }
                    E::UnknownExcludedDeviceGroups { .. } => {
                        ("unknown_device_groups", Some("exclude_device_groups"))
                    }
                    E::RolloutPercent { .. } => {
                        ("invalid_rollout_percent", Some("rollout_percent"))
                    }
                };
                let api = ApiError::unprocessable(code, error.to_string());
                match field {
                    Some(field) => api.with_field(field),
                    None => api,
                }
            }
            StoreError::UnknownMembers { .. } => {
                ApiError::unprocessable("unknown_members", error.to_string())
            }
            StoreError::UnknownGroups { .. } => {
                ApiError::unprocessable("unknown_groups", error.to_string())
            }
            StoreError::InUse {
                what,
                ref name,
                ref services,
            } => {
                let names = service_names(services);
                ApiError::new(
                    StatusCode::CONFLICT,
                    "group_in_use",
                    format!(
                        "{what} {name:?} is still selected by the entitlements of {}; remove it there first, or delete it with force (?force=true; --force in the CLI): it then stays selected as a deleted group that matches nothing, so no one gains access",
                        names.join(", ")
                    ),
                )
            }
            StoreError::InsideExcluded {
                ref name,
                ref containers,
                ref services,
            } => {
                let names = service_names(services);
                ApiError::new(
                    StatusCode::CONFLICT,
                    "group_in_excluded_group",
                    format!(
                        "group {name:?} is nested in {}, which the entitlements of {} exclude: deleting it would give its members those services; take it out of the exclusion first, or delete it with force (?force=true; --force in the CLI)",
                        containers
                            .iter()
                            .map(|c| format!("{c:?}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        names.join(", ")
                    ),
                )
            }
            StoreError::KeyUnusable { .. } => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_enrollment_key",
                error.to_string(),
            ),
            StoreError::TooManyMembers { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_members",
                error.to_string(),
            ),
            StoreError::Cycle { .. } => ApiError::unprocessable("group_cycle", error.to_string()),
            // Only a scheduled change's outcome carries it; never a request's.
            StoreError::CreatorRevoked(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "creator_revoked", error.to_string())
            }
            StoreError::Refused { code, ref message } => {
                ApiError::new(StatusCode::CONFLICT, code, message.clone())
            }
            StoreError::BadCursor => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", error.to_string())
            }
            StoreError::Corrupt(_) | StoreError::Database(_) | StoreError::Migrate(_) => {
                // Internals stay in the log; the caller learns only that it was not their fault.
                tracing::error!(error = %error, "storage failure");
                ApiError::internal()
            }
        }
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

/// The display names of services by id (an unknown id as it is).
fn service_names(services: &[String]) -> Vec<&str> {
    services
        .iter()
        .map(|id| entitle_core::service(id).map_or(id.as_str(), |s| s.display_name))
        .collect()
}
