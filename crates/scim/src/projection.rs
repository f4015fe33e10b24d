//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5 and §3.9) and
//! the ListResponse envelope (RFC 7644 §3.4.2).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::filter::AttrPath;
use crate::schema::LIST_RESPONSE_SCHEMA;

/// Attributes that are `returned: always` on every resource (RFC 7643 §3.1,
/// §3): `meta` is `returned: default`, so `attributes` may leave it out.
const ALWAYS: [&str; 2] = ["id", "schemas"];

/// Applies the `attributes` and `excludedAttributes` query parameters
/// (comma-separated paths, any case, URN-prefixed or not) to a resource.
/// Paths that do not parse are ignored, as they select nothing.
pub fn project(resource: &Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let Some(map) = resource.as_object() else {
        return resource.clone();
    };
    let mut out = match parse_list(attributes) {
        Some(wanted) => {
            let mut tree = Node::default();
            for path in &wanted {
                tree.insert(path);
            }
            let mut out = select_map(map, &tree);
            for key in ALWAYS {
                if let Some((k, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                    out.insert(k.clone(), v.clone());
                }
            }
            out
        }
        None => map.clone(),
    };
    for path in parse_list(excluded).unwrap_or_default() {
        let is_always = path.len() == 1 && ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&path[0]));
        if !is_always {
            remove_path(&mut out, &path);
        }
    }
    Value::Object(out)
}

/// A ListResponse, with integer counts as Okta requires.
pub fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

/// The JSON key segments of each listed path (`[urn,] name [, sub]`), or
/// `None` when the parameter is absent or lists nothing.
fn parse_list(list: Option<&str>) -> Option<Vec<Vec<String>>> {
    let paths: Vec<Vec<String>> = list?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter_map(|p| AttrPath::parse(p).ok())
        .map(|path| {
            let mut segments: Vec<String> = path.urn.into_iter().collect();
            segments.push(path.name);
            segments.extend(path.sub);
            segments
        })
        .collect();
    (!paths.is_empty()).then_some(paths)
}

/// The selected parts of a resource: a node is taken whole or by children.
#[derive(Default)]
struct Node {
    whole: bool,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            self.whole = true;
            return;
        };
        self.children
            .entry(first.to_ascii_lowercase())
            .or_default()
            .insert(rest);
    }
}

fn select_map(map: &Map<String, Value>, tree: &Node) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        let Some(node) = tree.children.get(&key.to_ascii_lowercase()) else {
            continue;
        };
        if let Some(selected) = select(value, node) {
            out.insert(key.clone(), selected);
        }
    }
    out
}

fn select(value: &Value, node: &Node) -> Option<Value> {
    if node.whole {
        return Some(value.clone());
    }
    match value {
        Value::Object(map) => {
            let out = select_map(map, node);
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let out: Vec<Value> = items.iter().filter_map(|item| select(item, node)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => None,
    }
}

fn remove_path(map: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(key) = map.keys().find(|k| k.eq_ignore_ascii_case(first)).cloned() else {
        return;
    };
    if rest.is_empty() {
        map.remove(&key);
        return;
    }
    match map.get_mut(&key) {
        Some(Value::Object(inner)) => remove_path(inner, rest),
        Some(Value::Array(items)) => {
            for item in items.iter_mut() {
                if let Value::Object(inner) = item {
                    remove_path(inner, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA};

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "id": "1",
            "userName": "a",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x", "type": "work"}, {"value": "a@y"}],
            ENTERPRISE_USER_SCHEMA: {"department": "Eng", "costCenter": "7"},
            "meta": {"resourceType": "User"}
        })
    }

    fn check(attributes: Option<&str>, excluded: Option<&str>, expected: Value) {
        assert_eq!(
            project(&user(), attributes, excluded),
            expected,
            "{attributes:?} {excluded:?}"
        );
    }

    #[test]
    fn rfc7644_3_9_attributes() {
        let always = |extra: Value| {
            let mut out = json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], "id": "1"});
            if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
                out.extend(extra);
            }
            out
        };
        check(Some("userName"), None, always(json!({"userName": "a"})));
        check(
            Some("USERNAME, name.givenName"),
            None,
            always(json!({"userName": "a", "name": {"givenName": "A"}})),
        );
        check(
            Some("name.givenName,name"),
            None,
            always(json!({"name": {"givenName": "A", "familyName": "B"}})),
        );
        check(
            Some("emails.type"),
            None,
            always(json!({"emails": [{"type": "work"}]})),
        );
        check(
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName"),
            None,
            always(json!({"userName": "a"})),
        );
        check(
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            None,
            always(json!({ENTERPRISE_USER_SCHEMA: {"department": "Eng"}})),
        );
        check(
            Some(ENTERPRISE_USER_SCHEMA),
            None,
            always(json!({ENTERPRISE_USER_SCHEMA: {"department": "Eng", "costCenter": "7"}})),
        );
        check(
            Some("meta,nickName"),
            None,
            always(json!({"meta": {"resourceType": "User"}})),
        );
        check(Some("id"), None, always(json!({})));
        check(Some(" , "), None, user());
    }

    #[test]
    fn rfc7644_3_9_excluded_attributes() {
        let without = |keys: &[&str]| {
            let mut out = user();
            for key in keys {
                if let Some(map) = out.as_object_mut() {
                    map.remove(*key);
                }
            }
            out
        };
        check(None, Some("emails"), without(&["emails"]));
        check(None, Some("EMAILS,meta"), without(&["emails", "meta"]));
        // `id` and `schemas` are returned always.
        check(None, Some("id,schemas"), user());
        let mut no_family = user();
        no_family["name"] = json!({"givenName": "A"});
        check(None, Some("name.familyName"), no_family);
        let mut no_types = user();
        no_types["emails"] = json!([{"value": "a@x"}, {"value": "a@y"}]);
        check(None, Some("emails.type"), no_types);
        let mut no_department = user();
        no_department[ENTERPRISE_USER_SCHEMA] = json!({"costCenter": "7"});
        check(
            None,
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            no_department,
        );
        check(None, None, user());
    }

    #[test]
    fn entra_excluded_members_on_group_reads() {
        let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g", "displayName": "G", "members": [{"value": "u"}]});
        assert_eq!(
            project(&group, None, Some("members")),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g", "displayName": "G"})
        );
    }

    #[test]
    fn rfc7644_3_4_2_list_response_counts_are_integers() {
        let list = list_response(vec![json!({"id": "1"})], 7, 3);
        assert_eq!(
            list,
            json!({"schemas": [LIST_RESPONSE_SCHEMA], "totalResults": 7, "startIndex": 3, "itemsPerPage": 1, "Resources": [{"id": "1"}]})
        );
        assert_eq!(list_response(Vec::new(), 0, 1)["Resources"], json!([]));
    }
}
