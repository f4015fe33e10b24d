//! Users and groups as entitle stores them: what a create or replace body
//! may carry, cleaned of what identity providers send but entitle must not
//! keep, and the members of a group.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ScimError;
use crate::filter::{get_ci_map, parse_bool};
use crate::schema::{self, AttrDef, AttrType, ResourceKind};

/// Validates and cleans a User create or replace body (RFC 7643 §4.1).
pub fn normalize_user(input: &Value) -> Result<Value, ScimError> {
    normalize(ResourceKind::User, input)
}

/// Validates and cleans a Group create or replace body (RFC 7643 §4.2).
pub fn normalize_group(input: &Value) -> Result<Value, ScimError> {
    normalize(ResourceKind::Group, input)
}

/// Validates and cleans a create or replace body of either kind.
///
/// Keeps only the attributes `/Schemas` declares, in their canonical case,
/// with boolean strings turned into booleans. Drops `id` and `meta` (the
/// server owns them), `password` (never stored), a user's `groups` (read
/// only), unknown extensions and empty values; sets `schemas` from what is
/// left and `active` to true when a user body leaves it out.
pub fn normalize(kind: ResourceKind, input: &Value) -> Result<Value, ScimError> {
    let Some(input) = input.as_object() else {
        return Err(ScimError::invalid_syntax(format!(
            "a {} must be a JSON object",
            kind.name()
        )));
    };
    let mut out = clean(kind, input, false)?;
    if kind == ResourceKind::User && !out.contains_key("active") {
        out.insert("active".to_owned(), Value::Bool(true));
    }
    check_required(kind, &out)?;
    set_schemas(kind, &mut out);
    Ok(Value::Object(out))
}

/// Whether a group member is a user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberType {
    /// A user.
    User,
    /// A nested group.
    Group,
}

/// One member of a group, as listed in its `members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's id.
    pub value: String,
    /// Whether it is a user or a group, when the client said.
    pub kind: Option<MemberType>,
    /// The member's name, when the client sent one.
    pub display: Option<String>,
}

/// The members of a group document, in order, without duplicates.
pub fn members(group: &Value) -> Vec<Member> {
    let Some(list) = group
        .as_object()
        .and_then(|g| get_ci_map(g, "members"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut out: Vec<Member> = Vec::with_capacity(list.len());
    for item in list {
        let Some(value) = item
            .as_object()
            .and_then(|m| get_ci_map(m, "value"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        if out.iter().any(|m| m.value == value) {
            continue;
        }
        let field = |name: &str| {
            item.as_object()
                .and_then(|m| get_ci_map(m, name))
                .and_then(Value::as_str)
        };
        out.push(Member {
            value: value.to_owned(),
            kind: field("type").and_then(member_type),
            display: field("display").map(str::to_owned),
        });
    }
    out
}

/// The ids of a group document's members, in order, without duplicates.
pub fn member_ids(group: &Value) -> Vec<String> {
    members(group).into_iter().map(|m| m.value).collect()
}

fn member_type(text: &str) -> Option<MemberType> {
    if text.eq_ignore_ascii_case("user") {
        Some(MemberType::User)
    } else if text.eq_ignore_ascii_case("group") {
        Some(MemberType::Group)
    } else {
        None
    }
}

/// Keeps the declared attributes of `input`, checked and in canonical form.
/// `keep_server_fields` keeps `id` and `meta` untouched (a stored resource
/// being patched); a client body has them dropped.
pub(crate) fn clean(
    kind: ResourceKind,
    input: &Map<String, Value>,
    keep_server_fields: bool,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in input {
        if key.eq_ignore_ascii_case("id") || key.eq_ignore_ascii_case("meta") {
            if keep_server_fields {
                out.insert(key.to_ascii_lowercase(), value.clone());
            }
            continue;
        }
        if let Some(urn) = schema::extension_schema(key)
            && kind.extensions().contains(&urn)
        {
            let Some(def) = schema::find_attr(Some(kind), None, urn) else {
                continue;
            };
            if let Some(cleaned) = clean_value(kind, def, value, urn)? {
                out.insert(urn.to_owned(), cleaned);
            }
            continue;
        }
        // `schemas` is recomputed; `password`, a user's `groups`, `roles`
        // and anything undeclared are dropped rather than refused, because
        // identity providers send them on every create.
        let Some(def) = schema::declared_attributes(kind)
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(key))
        else {
            continue;
        };
        if let Some(cleaned) = clean_value(kind, def, value, def.name)? {
            out.insert(def.name.to_owned(), cleaned);
        }
    }
    Ok(out)
}

/// One attribute's value, checked against its definition; `None` when it is
/// unassigned (null, empty list or empty object), which RFC 7643 §2.5 treats
/// as absent.
fn clean_value(
    kind: ResourceKind,
    def: &'static AttrDef,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if !def.multi_valued {
        return clean_single(kind, def, value, path);
    }
    let items = match value {
        Value::Null => return Ok(None),
        Value::Array(items) => items.as_slice(),
        single => std::slice::from_ref(single),
    };
    let mut out: Vec<Value> = Vec::with_capacity(items.len());
    for item in items {
        let Some(item) = clean_single(kind, def, item, path)? else {
            continue;
        };
        if out.iter().any(|seen| same_item(def, seen, &item)) {
            continue;
        }
        out.push(item);
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// Two values of a multi-valued attribute are the same item: members when
/// their ids match, anything else when equal.
pub(crate) fn same_item(def: &AttrDef, a: &Value, b: &Value) -> bool {
    if def.name == "members" {
        let id = |v: &Value| v.get("value").cloned();
        return id(a).is_some() && id(a) == id(b);
    }
    a == b
}

fn clean_single(
    kind: ResourceKind,
    def: &'static AttrDef,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    let wrong = |what: &str| {
        ScimError::invalid_value(format!("{path} must be {what}, not {}", short(value)))
    };
    Ok(match (def.ty, value) {
        (_, Value::Null) => None,
        (AttrType::String | AttrType::Reference, Value::String(s)) => {
            Some(Value::String(s.clone()))
        }
        // Some clients send numeric identifiers (employeeNumber) as numbers.
        (AttrType::String, Value::Number(n)) => Some(Value::String(n.to_string())),
        (AttrType::Boolean, Value::Bool(b)) => Some(Value::Bool(*b)),
        (AttrType::Boolean, Value::String(s)) => Some(Value::Bool(
            parse_bool(s).ok_or_else(|| wrong("a boolean"))?,
        )),
        (AttrType::DateTime, Value::String(s)) => {
            OffsetDateTime::parse(s, &Rfc3339).map_err(|_| wrong("an RFC 3339 date-time"))?;
            Some(Value::String(s.clone()))
        }
        (AttrType::Complex, Value::Object(map)) => {
            let mut out = Map::new();
            for (key, sub_value) in map {
                let Some(sub) = def.sub(key) else {
                    continue;
                };
                let sub_path = format!("{path}.{}", sub.name);
                if let Some(cleaned) = clean_value(kind, sub, sub_value, &sub_path)? {
                    out.insert(sub.name.to_owned(), cleaned);
                }
            }
            if kind == ResourceKind::Group && def.name == "members" {
                check_member(&mut out, path)?;
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        // A bare string in a multi-valued complex attribute is its `value`.
        (AttrType::Complex, Value::String(_)) if def.multi_valued && def.sub("value").is_some() => {
            let wrapped = Value::Object(Map::from_iter([("value".to_owned(), value.clone())]));
            return clean_single(kind, def, &wrapped, path);
        }
        (AttrType::String, _) => return Err(wrong("a string")),
        (AttrType::Reference, _) => return Err(wrong("a URI string")),
        (AttrType::Boolean, _) => return Err(wrong("a boolean")),
        (AttrType::DateTime, _) => return Err(wrong("an RFC 3339 date-time")),
        (AttrType::Complex, _) => return Err(wrong("an object")),
    })
}

/// A member needs a non-empty `value`; its `type`, if any, is `User` or `Group`.
fn check_member(member: &mut Map<String, Value>, path: &str) -> Result<(), ScimError> {
    let has_id = member
        .get("value")
        .and_then(Value::as_str)
        .is_some_and(|v| !v.trim().is_empty());
    if !has_id {
        return Err(ScimError::invalid_value(format!(
            "every item of {path} needs a non-empty \"value\" (the member's id)"
        )));
    }
    if let Some(Value::String(kind)) = member.get("type") {
        let canonical = match member_type(kind) {
            Some(MemberType::User) => "User",
            Some(MemberType::Group) => "Group",
            None => {
                return Err(ScimError::invalid_value(format!(
                    "{path}.type must be \"User\" or \"Group\", not {kind:?}"
                )));
            }
        };
        member.insert("type".to_owned(), Value::String(canonical.to_owned()));
    }
    Ok(())
}

/// RFC 7643 §4.1.1 / §4.2: a user needs a `userName`, a group a `displayName`.
pub(crate) fn check_required(
    kind: ResourceKind,
    resource: &Map<String, Value>,
) -> Result<(), ScimError> {
    let name = kind.name_attribute();
    let present = resource
        .get(name)
        .and_then(Value::as_str)
        .is_some_and(|v| !v.trim().is_empty());
    if present {
        return Ok(());
    }
    Err(ScimError::invalid_value(format!(
        "a {} needs a non-empty \"{name}\"",
        kind.name()
    )))
}

/// `schemas` lists the core schema and each extension the resource carries.
pub(crate) fn set_schemas(kind: ResourceKind, resource: &mut Map<String, Value>) {
    let mut schemas = vec![Value::String(kind.schema().to_owned())];
    for urn in kind.extensions() {
        if resource.contains_key(*urn) {
            schemas.push(Value::String((*urn).to_owned()));
        }
    }
    resource.insert("schemas".to_owned(), Value::Array(schemas));
}

/// A value, shortened for an error message.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};

    fn check(kind: ResourceKind, input: Value, expected: Value) {
        let out = normalize(kind, &input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
        assert_eq!(out, expected, "{input}");
    }

    fn rejects(kind: ResourceKind, input: Value) {
        let error = normalize(kind, &input).expect_err(&input.to_string());
        assert_eq!(error.status, 400, "{input}");
    }

    #[test]
    fn okta_create_user_body() {
        check(
            ResourceKind::User,
            json!({
                "schemas": [USER_SCHEMA], "userName": "isaac@example.com",
                "name": {"givenName": "Isaac", "familyName": "Brock"},
                "emails": [{"primary": "True", "value": "isaac@example.com", "type": "work"}],
                "displayName": "Isaac Brock", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
                "groups": [], "password": "1mz050nq", "active": "True",
            }),
            json!({
                "schemas": [USER_SCHEMA], "userName": "isaac@example.com",
                "name": {"givenName": "Isaac", "familyName": "Brock"},
                "emails": [{"primary": true, "value": "isaac@example.com", "type": "work"}],
                "displayName": "Isaac Brock", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
                "active": true,
            }),
        );
    }

    #[test]
    fn entra_create_user_body() {
        check(
            ResourceKind::User,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:custom:2.0:User"],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "Test_User_ab6490ee@contoso.com",
                "active": "False",
                "emails": [{"primary": true, "type": "work", "value": "Test_User@contoso.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "roles": [],
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "123", "department": "Eng", "manager": {"value": "m1", "$ref": null}},
                "urn:ietf:params:scim:schemas:extension:custom:2.0:User": {"x": 1},
            }),
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "Test_User_ab6490ee@contoso.com",
                "active": false,
                "emails": [{"primary": true, "type": "work", "value": "Test_User@contoso.com"}],
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "123", "department": "Eng", "manager": {"value": "m1"}},
            }),
        );
    }

    #[test]
    fn rfc7643_4_1_user_rules() {
        let cases = [
            // `active` defaults to true; `id` and `meta` belong to the server.
            (
                json!({"userName": "a", "id": "client-chosen", "meta": {"version": "x"}}),
                json!({"schemas": [USER_SCHEMA], "userName": "a", "active": true}),
            ),
            // Attribute names are case-insensitive and come back canonical.
            (
                json!({"USERNAME": "a", "Name": {"GIVENNAME": "A"}, "ACTIVE": false}),
                json!({"schemas": [USER_SCHEMA], "userName": "a", "name": {"givenName": "A"}, "active": false}),
            ),
            // Null and empty values are unassigned (RFC 7643 §2.5).
            (
                json!({"userName": "a", "nickName": null, "emails": [], "name": {}, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {}}),
                json!({"schemas": [USER_SCHEMA], "userName": "a", "active": true}),
            ),
            // A numeric employee number is kept as the string it names.
            (
                json!({"userName": "a", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"EmployeeNumber": 42}}),
                json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "userName": "a", "active": true,
                       ENTERPRISE_USER_SCHEMA: {"employeeNumber": "42"}}),
            ),
            // Duplicate values of a multi-valued attribute collapse.
            (
                json!({"userName": "a", "emails": [{"value": "x@y"}, {"value": "x@y"}]}),
                json!({"schemas": [USER_SCHEMA], "userName": "a", "active": true, "emails": [{"value": "x@y"}]}),
            ),
        ];
        for (input, expected) in cases {
            check(ResourceKind::User, input, expected);
        }
        for bad in [
            json!({"displayName": "no user name"}),
            json!({"userName": ""}),
            json!({"userName": "  "}),
            json!({"userName": true}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "name": "not an object"}),
            json!({"userName": "a", "emails": [{"value": ["x"]}]}),
            json!("not an object"),
        ] {
            rejects(ResourceKind::User, bad);
        }
    }

    #[test]
    fn rfc7643_4_2_group_rules() {
        check(
            ResourceKind::Group,
            json!({
                "schemas": [GROUP_SCHEMA], "displayName": "Eng", "externalId": "e1",
                "members": [{"value": "u1", "$ref": null, "type": "user"}, {"value": "g2", "type": "Group", "display": "Sub"}, {"value": "u1"}],
                "meta": {"resourceType": "Group"}, "id": "x",
            }),
            json!({
                "schemas": [GROUP_SCHEMA], "displayName": "Eng", "externalId": "e1",
                "members": [{"value": "u1", "type": "User"}, {"value": "g2", "type": "Group", "display": "Sub"}],
            }),
        );
        for bad in [
            json!({"displayName": ""}),
            json!({"members": []}),
            json!({"displayName": "g", "members": [{"display": "no value"}]}),
            json!({"displayName": "g", "members": [{"value": "u1", "type": "Device"}]}),
        ] {
            rejects(ResourceKind::Group, bad);
        }
    }

    #[test]
    fn group_members_are_listed() {
        let group = json!({"displayName": "g", "members": [
            {"value": "u1", "type": "User", "display": "Ann"},
            {"value": "g2", "type": "Group"},
            {"value": "u1"},
            {"value": 7},
            {"VALUE": "u3", "TYPE": "user"}
        ]});
        assert_eq!(member_ids(&group), ["u1", "g2", "u3"]);
        assert_eq!(
            members(&group)[0],
            Member {
                value: "u1".into(),
                kind: Some(MemberType::User),
                display: Some("Ann".into())
            }
        );
        assert_eq!(members(&group)[2].kind, Some(MemberType::User));
        assert!(member_ids(&json!({"displayName": "empty"})).is_empty());
    }
}
