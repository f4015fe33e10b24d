//! SCIM errors (RFC 7644 §3.12): an HTTP status, an optional `scimType` and a
//! human-readable detail, rendered as the SCIM error body.

use serde_json::{Value, json};

/// The URN of the SCIM error message schema.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` keywords of RFC 7644 §3.12 that entitle uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimType {
    /// The filter syntax was invalid or the filter is not supported.
    InvalidFilter,
    /// The filter yields too many results to process.
    TooMany,
    /// One or more attribute values are already in use or reserved.
    Uniqueness,
    /// The modification is incompatible with the attribute's mutability.
    Mutability,
    /// The request body structure was invalid or did not conform to the schema.
    InvalidSyntax,
    /// The `path` attribute was invalid or malformed.
    InvalidPath,
    /// The path did not yield an attribute or value that could be operated on.
    NoTarget,
    /// A required value was missing or a value was not compatible.
    InvalidValue,
    /// The specified SCIM protocol version is not supported.
    InvalidVers,
    /// The request would reveal sensitive information.
    Sensitive,
}

impl ScimType {
    /// The keyword as it appears in the `scimType` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFilter => "invalidFilter",
            Self::TooMany => "tooMany",
            Self::Uniqueness => "uniqueness",
            Self::Mutability => "mutability",
            Self::InvalidSyntax => "invalidSyntax",
            Self::InvalidPath => "invalidPath",
            Self::NoTarget => "noTarget",
            Self::InvalidValue => "invalidValue",
            Self::InvalidVers => "invalidVers",
            Self::Sensitive => "sensitive",
        }
    }
}

/// A SCIM error: what the service provider answers when a request fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scim error {status}: {detail}")]
pub struct ScimError {
    /// The HTTP status code.
    pub status: u16,
    /// The SCIM detail error keyword, for 400 and 409 answers.
    pub scim_type: Option<ScimType>,
    /// What is wrong, in words an administrator can act on.
    pub detail: String,
}

impl ScimError {
    /// An error with any status and keyword.
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// 400 `invalidFilter`: the filter cannot be parsed or is not supported.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::InvalidFilter), detail)
    }

    /// 400 `invalidPath`: a PATCH path is malformed.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::InvalidPath), detail)
    }

    /// 400 `invalidValue`: a value is missing or has the wrong type.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::InvalidValue), detail)
    }

    /// 400 `noTarget`: a PATCH path selects nothing to operate on.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::NoTarget), detail)
    }

    /// 409 `uniqueness`: a unique value (such as `userName`) is already taken.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }

    /// 400 `mutability`: the request tries to change a read-only or immutable attribute.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::Mutability), detail)
    }

    /// 404: the resource does not exist (or belongs to another tenant).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }

    /// 412: the `If-Match` version is stale.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }

    /// 413: the request body is larger than the service accepts.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(413, None, detail)
    }

    /// 400 `invalidSyntax`: the body is not the JSON shape the operation needs.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some(ScimType::InvalidSyntax), detail)
    }

    /// The SCIM error body, with `status` as a string as RFC 7644 §3.12 shows it.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = Value::String(scim_type.as_str().to_owned());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(error: ScimError, expected: Value) {
        assert_eq!(error.to_json(), expected);
    }

    #[test]
    fn rfc7644_3_12_error_bodies() {
        check(
            ScimError::invalid_filter("bad filter"),
            json!({"schemas": [ERROR_SCHEMA], "status": "400", "scimType": "invalidFilter", "detail": "bad filter"}),
        );
        check(
            ScimError::uniqueness("userName \"a\" is taken"),
            json!({"schemas": [ERROR_SCHEMA], "status": "409", "scimType": "uniqueness", "detail": "userName \"a\" is taken"}),
        );
        check(
            ScimError::not_found("no user 1"),
            json!({"schemas": [ERROR_SCHEMA], "status": "404", "detail": "no user 1"}),
        );
        check(
            ScimError::precondition_failed("stale"),
            json!({"schemas": [ERROR_SCHEMA], "status": "412", "detail": "stale"}),
        );
        check(
            ScimError::too_large("big"),
            json!({"schemas": [ERROR_SCHEMA], "status": "413", "detail": "big"}),
        );
        check(
            ScimError::no_target("x").clone(),
            json!({"schemas": [ERROR_SCHEMA], "status": "400", "scimType": "noTarget", "detail": "x"}),
        );
    }

    #[test]
    fn constructors_pick_the_rfc_status_and_keyword() {
        let cases = [
            (
                ScimError::invalid_path("p"),
                400,
                Some(ScimType::InvalidPath),
            ),
            (
                ScimError::invalid_value("v"),
                400,
                Some(ScimType::InvalidValue),
            ),
            (ScimError::mutability("m"), 400, Some(ScimType::Mutability)),
            (
                ScimError::invalid_syntax("s"),
                400,
                Some(ScimType::InvalidSyntax),
            ),
        ];
        for (error, status, scim_type) in cases {
            assert_eq!((error.status, error.scim_type), (status, scim_type));
        }
    }
}
