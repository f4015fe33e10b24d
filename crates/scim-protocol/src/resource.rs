//! SCIM resources as entitle stores and renders them, and the discovery
//! documents that describe exactly what is supported.

use serde_json::{Map, Value, json};

use crate::ScimError;
use crate::filter::get_ci;

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension.
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// List responses.
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Errors.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// PATCH requests.
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// User attributes kept besides the columns, with their sub-attributes; this
/// list and `/Schemas` describe the same thing.
const USER_ATTRIBUTES: &[(&str, &[&str])] = &[
    (
        "name",
        &[
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix",
        ],
    ),
    ("nickName", &[]),
    ("title", &[]),
    ("userType", &[]),
    ("preferredLanguage", &[]),
    ("locale", &[]),
    ("timezone", &[]),
    ("emails", &["value", "type", "primary", "display"]),
    ("phoneNumbers", &["value", "type", "primary", "display"]),
];

const ENTERPRISE_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("employeeNumber", &[]),
    ("costCenter", &[]),
    ("organization", &[]),
    ("division", &[]),
    ("department", &[]),
    ("manager", &["value", "$ref", "displayName"]),
];

/// A user as a client sends it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Login name (required).
    pub user_name: String,
    /// The identity provider's id.
    pub external_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Active (default true).
    pub active: bool,
    /// The other supported attributes, including the enterprise extension.
    pub attributes: Value,
}

/// A group as a client sends it, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Display name (required).
    pub display_name: String,
    /// The identity provider's id.
    pub external_id: Option<String>,
    /// Member ids (users or groups).
    pub members: Vec<String>,
}

fn boolean(value: &Value, name: &str) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        // Entra ID sends booleans as "True" and "False".
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::invalid_value(format!(
            "{name} must be a boolean, not {other}"
        ))),
    }
}

fn optional_string(input: &Value, name: &str) -> Result<Option<String>, ScimError> {
    match get_ci(input, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name} must be a string, not {other}"
        ))),
    }
}

/// Keeps the supported attributes of `input` (case-insensitive names, written
/// in their canonical case) and coerces boolean strings.
fn keep(input: &Value, supported: &[(&str, &[&str])]) -> Result<Map<String, Value>, ScimError> {
    let mut kept = Map::new();
    for (name, subs) in supported {
        let Some(value) = get_ci(input, name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let value = if subs.is_empty() {
            value.clone()
        } else {
            let canonical = |item: &Value| -> Result<Value, ScimError> {
                let Value::Object(_) = item else {
                    return Err(ScimError::invalid_value(format!(
                        "{name} values must be objects"
                    )));
                };
                let mut out = Map::new();
                for sub in *subs {
                    if let Some(v) = get_ci(item, sub).filter(|v| !v.is_null()) {
                        let v = if *sub == "primary" {
                            Value::Bool(boolean(v, "primary")?)
                        } else {
                            v.clone()
                        };
                        out.insert((*sub).to_owned(), v);
                    }
                }
                Ok(Value::Object(out))
            };
            match value {
                Value::Array(items) => {
                    Value::Array(items.iter().map(canonical).collect::<Result<_, _>>()?)
                }
                other => canonical(other)?,
            }
        };
        kept.insert((*name).to_owned(), value);
    }
    Ok(kept)
}

impl User {
    /// Validates a create or replace body; read-only and unknown attributes
    /// (`id`, `meta`, `groups`, `password`, `roles`…) are ignored, never stored.
    pub fn from_json(input: &Value) -> Result<Self, ScimError> {
        if !input.is_object() {
            return Err(ScimError::invalid_syntax("a User must be a JSON object"));
        }
        let user_name = match get_ci(input, "userName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => {
                return Err(ScimError::invalid_value(
                    "userName is required and must be a non-empty string",
                ));
            }
        };
        let active = match get_ci(input, "active") {
            None | Some(Value::Null) => true,
            Some(value) => boolean(value, "active")?,
        };
        let mut attributes = keep(input, USER_ATTRIBUTES)?;
        // Whether `active` was given at all is kept, so that a user whose
        // `active` was removed reads back without it (and counts as active).
        if get_ci(input, "active").is_some_and(|v| !v.is_null()) {
            attributes.insert("active".into(), Value::Bool(active));
        }
        if let Some(extension) = get_ci(input, ENTERPRISE_USER).filter(|v| !v.is_null()) {
            if !extension.is_object() {
                return Err(ScimError::invalid_value(
                    "the enterprise extension must be an object",
                ));
            }
            let kept = keep(extension, ENTERPRISE_ATTRIBUTES)?;
            if !kept.is_empty() {
                attributes.insert(ENTERPRISE_USER.to_owned(), Value::Object(kept));
            }
        }
        Ok(Self {
            user_name,
            external_id: optional_string(input, "externalId")?,
            display_name: optional_string(input, "displayName")?,
            active,
            attributes: Value::Object(attributes),
        })
    }

    /// The full SCIM representation.
    pub fn to_json(&self, id: &str, meta: Value) -> Value {
        let mut schemas = vec![Value::String(USER_SCHEMA.into())];
        if get_ci(&self.attributes, ENTERPRISE_USER).is_some() {
            schemas.push(Value::String(ENTERPRISE_USER.into()));
        }
        let mut out = Map::new();
        out.insert("schemas".into(), Value::Array(schemas));
        out.insert("id".into(), Value::String(id.into()));
        if let Some(external_id) = &self.external_id {
            out.insert("externalId".into(), Value::String(external_id.clone()));
        }
        out.insert("userName".into(), Value::String(self.user_name.clone()));
        if let Some(display_name) = &self.display_name {
            out.insert("displayName".into(), Value::String(display_name.clone()));
        }
        if let Value::Object(attributes) = &self.attributes {
            for (k, v) in attributes {
                let v = if k == "active" {
                    Value::Bool(self.active)
                } else {
                    v.clone()
                };
                out.insert(k.clone(), v);
            }
        }
        out.insert("meta".into(), meta);
        Value::Object(out)
    }
}

impl Group {
    /// Validates a create or replace body.
    pub fn from_json(input: &Value) -> Result<Self, ScimError> {
        if !input.is_object() {
            return Err(ScimError::invalid_syntax("a Group must be a JSON object"));
        }
        let display_name = match get_ci(input, "displayName") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => {
                return Err(ScimError::invalid_value(
                    "displayName is required and must be a non-empty string",
                ));
            }
        };
        let members = match get_ci(input, "members") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match get_ci(item, "value") {
                    Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
                    _ => Err(ScimError::invalid_value(
                        "each member needs a \"value\" with the member's id",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ScimError::invalid_value("members must be an array")),
        };
        // A set, so that a body of tens of thousands of members stays linear.
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        let unique: Vec<String> = members
            .into_iter()
            .filter(|member| seen.insert(member.clone()))
            .collect();
        Ok(Self {
            display_name,
            external_id: optional_string(input, "externalId")?,
            members: unique,
        })
    }

    /// The full SCIM representation; `members` are (id, "User" or "Group", display, $ref).
    pub fn to_json(&self, id: &str, members: Option<Vec<Value>>, meta: Value) -> Value {
        let mut out = Map::new();
        out.insert("schemas".into(), json!([GROUP_SCHEMA]));
        out.insert("id".into(), Value::String(id.into()));
        if let Some(external_id) = &self.external_id {
            out.insert("externalId".into(), Value::String(external_id.clone()));
        }
        out.insert(
            "displayName".into(),
            Value::String(self.display_name.clone()),
        );
        if let Some(members) = members {
            out.insert("members".into(), Value::Array(members));
        }
        out.insert("meta".into(), meta);
        Value::Object(out)
    }
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.9); `id` and
/// `schemas` are always returned.
pub fn project(resource: &Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let Value::Object(object) = resource else {
        return resource.clone();
    };
    let list = |text: &str| -> Vec<String> {
        text.split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let always = |key: &str| key.eq_ignore_ascii_case("id") || key.eq_ignore_ascii_case("schemas");
    // "urn:…:User:userName" names the core attribute "userName".
    let strip_core = |name: String| -> String {
        for urn in [USER_SCHEMA, GROUP_SCHEMA] {
            let prefix = format!("{}:", urn.to_ascii_lowercase());
            if let Some(rest) = name.strip_prefix(&prefix) {
                return rest.to_owned();
            }
        }
        name
    };
    if let Some(wanted) = attributes.map(list).filter(|l| !l.is_empty()) {
        let wanted: Vec<String> = wanted.into_iter().map(strip_core).collect();
        let mut out = Map::new();
        for (key, value) in object {
            let lower = key.to_ascii_lowercase();
            if always(key) || wanted.contains(&lower) {
                out.insert(key.clone(), value.clone());
                continue;
            }
            // Sub-attributes ("name.givenName") and extension attributes ("urn:…:User:department").
            let subs: Vec<&str> = wanted
                .iter()
                .filter_map(|w| {
                    w.strip_prefix(&format!("{lower}."))
                        .or_else(|| w.strip_prefix(&format!("{lower}:")))
                })
                .collect();
            if !subs.is_empty() {
                if let Value::Object(inner) = value {
                    let kept: Map<String, Value> = inner
                        .iter()
                        .filter(|(k, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(k)))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    out.insert(key.clone(), Value::Object(kept));
                } else if let Value::Array(items) = value {
                    let kept: Vec<Value> = items
                        .iter()
                        .map(|item| match item {
                            Value::Object(inner) => Value::Object(
                                inner
                                    .iter()
                                    .filter(|(k, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(k)))
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect(),
                            ),
                            other => other.clone(),
                        })
                        .collect();
                    out.insert(key.clone(), Value::Array(kept));
                }
            }
        }
        return Value::Object(out);
    }
    if let Some(unwanted) = excluded.map(list).filter(|l| !l.is_empty()) {
        let unwanted: Vec<String> = unwanted.into_iter().map(strip_core).collect();
        let out: Map<String, Value> = object
            .iter()
            .filter(|(key, _)| always(key) || !unwanted.contains(&key.to_ascii_lowercase()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return Value::Object(out);
    }
    resource.clone()
}

/// A ListResponse (RFC 7644 §3.4.2), with integer counts.
pub fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// `/ServiceProviderConfig`, consistent with what is really supported.
pub fn service_provider_config(base_url: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": 200},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The tenant's SCIM token, sent as 'Authorization: Bearer <token>'.",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base_url}/ServiceProviderConfig")},
    })
}

/// `/ResourceTypes`: User (with the enterprise extension) and Group.
pub fn resource_types(base_url: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users", "description": "User Account",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_USER, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups", "description": "Group",
            "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/Group")},
        }),
    ]
}

struct Attr {
    name: &'static str,
    kind: &'static str,
    multi: bool,
    required: bool,
    case_exact: bool,
    mutability: &'static str,
    returned: &'static str,
    uniqueness: &'static str,
    subs: Vec<Attr>,
    reference_types: &'static [&'static str],
}

fn attr(name: &'static str) -> Attr {
    Attr {
        name,
        kind: "string",
        multi: false,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        subs: Vec::new(),
        reference_types: &[],
    }
}

impl Attr {
    fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }
    fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn case_exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn mutability(mut self, m: &'static str) -> Self {
        self.mutability = m;
        self
    }
    fn unique(mut self, u: &'static str) -> Self {
        self.uniqueness = u;
        self
    }
    fn subs(mut self, subs: Vec<Attr>) -> Self {
        self.kind = "complex";
        self.subs = subs;
        self
    }
    fn references(mut self, types: &'static [&'static str]) -> Self {
        self.kind = "reference";
        self.reference_types = types;
        self
    }

    fn json(&self) -> Value {
        let mut out = json!({
            "name": self.name, "type": self.kind, "multiValued": self.multi, "description": self.name,
            "required": self.required, "mutability": self.mutability, "returned": self.returned,
        });
        if self.kind == "complex" {
            out["subAttributes"] = Value::Array(self.subs.iter().map(Attr::json).collect());
        } else {
            out["caseExact"] = Value::Bool(self.case_exact);
            out["uniqueness"] = Value::String(self.uniqueness.into());
        }
        if !self.reference_types.is_empty() {
            out["referenceTypes"] = json!(self.reference_types);
        }
        out
    }
}

fn multi_valued(name: &'static str) -> Attr {
    attr(name).multi().subs(vec![
        attr("value"),
        attr("type"),
        attr("primary").kind("boolean"),
        attr("display"),
    ])
}

fn schema(id: &str, name: &str, attributes: Vec<Attr>, base_url: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id, "name": name, "description": name,
        "attributes": attributes.iter().map(Attr::json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base_url}/Schemas/{id}")},
    })
}

/// `/Schemas`: every attribute entitle stores and returns, as it treats it.
pub fn schemas(base_url: &str) -> Vec<Value> {
    let user = vec![
        attr("userName").required().unique("server"),
        attr("name").subs(vec![
            attr("formatted"),
            attr("familyName"),
            attr("givenName"),
            attr("middleName"),
            attr("honorificPrefix"),
            attr("honorificSuffix"),
        ]),
        attr("displayName"),
        attr("nickName"),
        attr("title"),
        attr("userType"),
        attr("preferredLanguage"),
        attr("locale"),
        attr("timezone"),
        attr("active").kind("boolean"),
        multi_valued("emails"),
        multi_valued("phoneNumbers"),
        attr("externalId").case_exact(),
    ];
    let group = vec![
        attr("displayName").required(),
        attr("externalId").case_exact(),
        attr("members").multi().subs(vec![
            attr("value").case_exact().mutability("immutable"),
            attr("$ref")
                .references(&["User", "Group"])
                .mutability("immutable"),
        ]),
    ];
    let enterprise = vec![
        attr("employeeNumber"),
        attr("costCenter"),
        attr("organization"),
        attr("division"),
        attr("department"),
        attr("manager").subs(vec![
            attr("value"),
            attr("$ref").references(&["User"]),
            attr("displayName").mutability("readOnly"),
        ]),
    ];
    vec![
        schema(USER_SCHEMA, "User", user, base_url),
        schema(GROUP_SCHEMA, "Group", group, base_url),
        schema(ENTERPRISE_USER, "EnterpriseUser", enterprise, base_url),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okta_create_body_keeps_what_is_supported_and_drops_the_rest() {
        let body = json!({
            "schemas": [USER_SCHEMA], "userName": "isaac@example.com", "name": {"givenName": "Isaac", "familyName": "Brock"},
            "emails": [{"primary": "True", "value": "isaac@example.com", "type": "work"}], "displayName": "Isaac Brock",
            "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7", "groups": [], "password": "1mz050nq", "active": "True",
            "roles": [], "meta": {"resourceType": "User"},
        });
        let user = User::from_json(&body).expect("valid");
        assert!(user.active);
        assert_eq!(user.attributes["emails"][0]["primary"], true);
        assert!(
            user.attributes.get("password").is_none() && user.attributes.get("groups").is_none()
        );
        let shown = user.to_json("id-1", json!({"resourceType": "User"}));
        assert_eq!(shown["locale"], "en-US");
        assert!(shown.get("password").is_none());
    }

    #[test]
    fn users_and_groups_are_validated() {
        assert!(User::from_json(&json!({"displayName": "no user name"})).is_err());
        assert!(User::from_json(&json!({"userName": "x", "active": "maybe"})).is_err());
        assert!(User::from_json(&json!({"userName": "x", "emails": ["not an object"]})).is_err());
        assert!(Group::from_json(&json!({"displayName": ""})).is_err());
        assert!(
            Group::from_json(&json!({"displayName": "g", "members": [{"display": "no value"}]}))
                .is_err()
        );
        let group = Group::from_json(
            &json!({"displayName": "g", "members": [{"value": "a"}, {"value": "a", "$ref": null}]}),
        )
        .expect("valid");
        assert_eq!(group.members, vec!["a".to_owned()]);
    }

    #[test]
    fn rfc7644_3_9_attributes_and_excluded_attributes() {
        let resource = json!({"schemas": [USER_SCHEMA], "id": "1", "userName": "a", "name": {"givenName": "A", "familyName": "B"}, "meta": {}});
        let only = project(&resource, Some("userName,name.givenName"), None);
        assert_eq!(
            only,
            json!({"schemas": [USER_SCHEMA], "id": "1", "userName": "a", "name": {"givenName": "A"}})
        );
        let without = project(&resource, None, Some("name,id"));
        assert!(without.get("name").is_none() && without.get("id").is_some());
        let urn = project(
            &resource,
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            None,
        );
        assert_eq!(urn["userName"], "a");
    }
}
