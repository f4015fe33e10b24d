//! PATCH (RFC 7644 §3.5.2), with the habits of Entra ID and Okta accepted.
//!
//! A request is applied to a copy of the resource and only committed when
//! every operation succeeds, as §3.5.2 requires. The result is then cleaned
//! by the same rules as a create body, so a PATCH can never store what a
//! POST could not (a `password`, an undeclared attribute, a boolean string).

use serde_json::{Map, Value};

use crate::ScimError;
use crate::filter::{AttrPath, CompValue, CompareOp, Filter, PatchPath, get_ci_map, parse_bool};
use crate::resource::{check_required, clean, same_item, set_schemas};
use crate::schema::{self, AttrDef, PATCH_OP_SCHEMA, ResourceKind};

/// A PATCH operation's verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    /// `add`
    Add,
    /// `remove`
    Remove,
    /// `replace`
    Replace,
}

/// One operation of a PATCH request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    /// The verb.
    pub op: PatchOp,
    /// The target; `None` means the value holds attributes to add or replace.
    pub path: Option<PatchPath>,
    /// The value, absent for most removes.
    pub value: Option<Value>,
}

/// A parsed PATCH request body.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchRequest {
    /// The operations, applied in order.
    pub operations: Vec<PatchOperation>,
}

impl PatchRequest {
    /// Parses a PatchOp body: `op` in any case, `Operations` in any case, and
    /// the PatchOp schema URN checked when present but not required.
    pub fn from_json(body: &Value) -> Result<Self, ScimError> {
        let Some(body) = body.as_object() else {
            return Err(ScimError::invalid_syntax(
                "a PATCH body must be a JSON object",
            ));
        };
        if let Some(schemas) = get_ci_map(body, "schemas") {
            let names_patch_op = schemas.as_array().is_some_and(|list| {
                list.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))
                })
            });
            if !names_patch_op {
                return Err(ScimError::invalid_syntax(format!(
                    "a PATCH body's \"schemas\" must list {PATCH_OP_SCHEMA}"
                )));
            }
        }
        let Some(list) = get_ci_map(body, "Operations").and_then(Value::as_array) else {
            return Err(ScimError::invalid_syntax(
                "a PATCH body needs an \"Operations\" array",
            ));
        };
        let operations = list
            .iter()
            .enumerate()
            .map(|(i, item)| parse_operation(i, item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { operations })
    }
}

fn parse_operation(index: usize, item: &Value) -> Result<PatchOperation, ScimError> {
    let Some(item) = item.as_object() else {
        return Err(ScimError::invalid_syntax(format!(
            "Operations[{index}] must be an object"
        )));
    };
    let op = match get_ci_map(item, "op").and_then(Value::as_str) {
        Some(op) if op.eq_ignore_ascii_case("add") => PatchOp::Add,
        Some(op) if op.eq_ignore_ascii_case("remove") => PatchOp::Remove,
        Some(op) if op.eq_ignore_ascii_case("replace") => PatchOp::Replace,
        other => {
            return Err(ScimError::invalid_syntax(format!(
                "Operations[{index}].op must be \"add\", \"remove\" or \"replace\", not {}",
                other.map_or_else(|| "missing".to_owned(), |o| format!("{o:?}"))
            )));
        }
    };
    let path = match get_ci_map(item, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.trim().is_empty() => None,
        Some(Value::String(p)) => Some(PatchPath::parse(p)?),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "Operations[{index}].path must be a string"
            )));
        }
    };
    let value = get_ci_map(item, "value").cloned();
    match op {
        PatchOp::Remove if path.is_none() => {
            return Err(ScimError::no_target(format!(
                "Operations[{index}] removes without a path"
            )));
        }
        PatchOp::Add | PatchOp::Replace if value.is_none() => {
            return Err(ScimError::invalid_value(format!(
                "Operations[{index}] needs a value"
            )));
        }
        PatchOp::Add | PatchOp::Replace
            if path.is_none() && !value.as_ref().is_some_and(Value::is_object) =>
        {
            return Err(ScimError::invalid_value(format!(
                "Operations[{index}] has no path, so its value must be an object of attributes"
            )));
        }
        _ => {}
    }
    Ok(PatchOperation { op, path, value })
}

/// Applies a PATCH request to a resource in its SCIM JSON form, all or nothing.
///
/// Pass the resource as it is served, with `id` and `meta`: a request may
/// repeat them (Okta puts `id` in a path-less replace) but may not change
/// them (400 mutability). The result is cleaned like a create body and must
/// still have its `userName` or `displayName`.
pub fn apply_patch(
    resource: &mut Value,
    kind: ResourceKind,
    request: &PatchRequest,
) -> Result<(), ScimError> {
    let Some(original) = resource.as_object() else {
        return Err(ScimError::invalid_syntax(
            "the resource to patch is not an object",
        ));
    };
    let mut work = original.clone();
    for operation in &request.operations {
        apply_operation(&mut work, kind, operation)?;
    }
    for read_only in ["id", "meta"] {
        let before = get_ci_map(original, read_only);
        let after = get_ci_map(&work, read_only);
        match before {
            Some(before) if after != Some(before) => {
                return Err(ScimError::mutability(format!(
                    "{read_only} is read-only and cannot be changed"
                )));
            }
            Some(_) => {}
            // The server did not pass it, so whatever a request wrote there is ignored.
            None => remove_ci(&mut work, read_only),
        }
    }
    let mut cleaned = clean(kind, &work, true)?;
    check_required(kind, &cleaned)?;
    set_schemas(kind, &mut cleaned);
    *resource = Value::Object(cleaned);
    Ok(())
}

fn apply_operation(
    root: &mut Map<String, Value>,
    kind: ResourceKind,
    operation: &PatchOperation,
) -> Result<(), ScimError> {
    let value = operation.value.as_ref();
    if let Some(path) = &operation.path {
        return apply_at(root, kind, operation.op, path, value);
    }
    // Path-less add or replace: each key of the value is a path of its own
    // (RFC 7644 §3.5.2.1 and §3.5.2.3). Entra ID writes dotted keys
    // (`name.givenName`) and URN-prefixed keys; extension URNs may also hold
    // an object of the extension's attributes.
    let Some(Value::Object(attributes)) = value else {
        return Err(ScimError::invalid_value(
            "a path-less operation needs an object of attributes",
        ));
    };
    for (key, value) in attributes {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some(urn) = schema::extension_schema(key)
            && let Value::Object(inner) = value
        {
            for (inner_key, inner_value) in inner {
                let mut path = PatchPath::parse(inner_key)?;
                path.attr.urn = Some(urn.to_owned());
                apply_at(root, kind, operation.op, &path, Some(inner_value))?;
            }
            continue;
        }
        let path = PatchPath::parse(key).map_err(|e| ScimError::invalid_value(e.detail))?;
        apply_at(root, kind, operation.op, &path, Some(value))?;
    }
    Ok(())
}

fn apply_at(
    root: &mut Map<String, Value>,
    kind: ResourceKind,
    op: PatchOp,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let attr = &path.attr;
    let def = schema::find_attr(Some(kind), attr.urn.as_deref(), &attr.name);
    let Some(container) = container_mut(root, attr.urn.as_deref(), op != PatchOp::Remove) else {
        // Removing from an extension the resource does not have changes nothing.
        return Ok(());
    };
    let key = key_for(container, &attr.name, def);
    if let Some(filter) = &path.filter {
        return apply_filtered(
            container,
            &key,
            def,
            op,
            filter,
            path.sub.as_deref(),
            value,
            path,
        );
    }
    if let Some(sub) = &attr.sub {
        return apply_sub(container, &key, op, sub, value, attr);
    }
    let value = value.unwrap_or(&Value::Null);
    let multi = def.map_or_else(
        || container.get(&key).is_some_and(Value::is_array),
        |d| d.multi_valued,
    );
    match op {
        PatchOp::Remove => {
            remove_whole(container, &key, def, multi, value);
            Ok(())
        }
        _ if value.is_null() => {
            // RFC 7643 §2.5: null means unassigned.
            container.remove(&key);
            Ok(())
        }
        PatchOp::Add if multi => {
            append(container, &key, def, value);
            Ok(())
        }
        PatchOp::Replace if multi => {
            let items = match value {
                Value::Array(items) => items.clone(),
                single => vec![single.clone()],
            };
            container.insert(key, Value::Array(items));
            Ok(())
        }
        PatchOp::Add | PatchOp::Replace => {
            // A complex attribute takes the given sub-attributes and keeps the rest.
            if let (Value::Object(new), Some(Value::Object(existing))) =
                (value, container.get_mut(&key))
            {
                for (sub, sub_value) in new {
                    set_ci(existing, sub, sub_value.clone());
                }
                return Ok(());
            }
            container.insert(key, value.clone());
            Ok(())
        }
    }
}

/// Remove a whole attribute, or, when a value lists items of a multi-valued
/// attribute, only those items: Entra ID removes members with
/// `{"op":"Remove","path":"members","value":[{"value":"ID"}]}`.
fn remove_whole(
    container: &mut Map<String, Value>,
    key: &str,
    def: Option<&'static AttrDef>,
    multi: bool,
    value: &Value,
) {
    let selected = match value {
        Value::Null => None,
        Value::Array(items) if multi => Some(items.as_slice()),
        single if multi => Some(std::slice::from_ref(single)),
        _ => None,
    };
    let Some(selected) = selected else {
        container.remove(key);
        return;
    };
    if let Some(Value::Array(items)) = container.get_mut(key) {
        items.retain(|item| !selected.iter().any(|s| same_value(def, item, s)));
    }
}

/// Whether `item` is the one `selector` names: by `value` when the selector
/// has one, else by equality.
fn same_value(def: Option<&'static AttrDef>, item: &Value, selector: &Value) -> bool {
    match (item, selector) {
        (Value::Object(item), Value::Object(sel)) => match get_ci_map(sel, "value") {
            Some(wanted) => get_ci_map(item, "value") == Some(wanted),
            None => def.is_some_and(|d| {
                same_item(d, &Value::Object(item.clone()), &Value::Object(sel.clone()))
            }),
        },
        (Value::Object(item), scalar) => get_ci_map(item, "value") == Some(scalar),
        (a, b) => a == b,
    }
}

/// RFC 7644 §3.5.2.1: add to a multi-valued attribute appends, skipping
/// values already there.
fn append(
    container: &mut Map<String, Value>,
    key: &str,
    def: Option<&'static AttrDef>,
    value: &Value,
) {
    let new_items = match value {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    let slot = container
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        let old = std::mem::take(slot);
        *slot = Value::Array(if old.is_null() { Vec::new() } else { vec![old] });
    }
    let Value::Array(items) = slot else {
        return;
    };
    let mut touched = Vec::new();
    for item in new_items {
        if item.is_null() {
            continue;
        }
        if let Some(at) = items
            .iter()
            .position(|old| same_value(def, old, &item) || old == &item)
        {
            if is_members(def) {
                continue;
            }
            // The same value again may still carry new sub-attributes, such as `primary`.
            match (&mut items[at], item) {
                (Value::Object(old), Value::Object(new)) => {
                    for (k, v) in new {
                        set_ci(old, &k, v);
                    }
                }
                (slot, item) => *slot = item,
            }
            touched.push(at);
            continue;
        }
        items.push(item);
        touched.push(items.len() - 1);
    }
    settle_primary(items, &touched);
}

fn is_members(def: Option<&'static AttrDef>) -> bool {
    def.is_some_and(|d| d.name == "members")
}

/// `attr.sub` without a filter: on a complex attribute it is one value; on a
/// multi-valued one it is that sub-attribute of every value.
fn apply_sub(
    container: &mut Map<String, Value>,
    key: &str,
    op: PatchOp,
    sub: &str,
    value: Option<&Value>,
    attr: &AttrPath,
) -> Result<(), ScimError> {
    let value = value.cloned().unwrap_or(Value::Null);
    let setting = op != PatchOp::Remove && !value.is_null();
    match container.get_mut(key) {
        Some(Value::Array(items)) => {
            if items.is_empty() && setting {
                return Err(no_target(attr));
            }
            for item in items.iter_mut() {
                if let Value::Object(item) = item {
                    write_sub(item, sub, setting.then(|| value.clone()));
                }
            }
            Ok(())
        }
        Some(Value::Object(existing)) => {
            write_sub(existing, sub, setting.then_some(value));
            Ok(())
        }
        _ if !setting => Ok(()),
        _ => {
            let mut object = Map::new();
            object.insert(sub.to_owned(), value);
            container.insert(key.to_owned(), Value::Object(object));
            Ok(())
        }
    }
}

fn write_sub(object: &mut Map<String, Value>, sub: &str, value: Option<Value>) {
    match value {
        Some(value) => set_ci(object, sub, value),
        None => remove_ci(object, sub),
    }
}

/// `attr[filter]` and `attr[filter].sub` (RFC 7644 §3.5.2).
#[allow(clippy::too_many_arguments)]
fn apply_filtered(
    container: &mut Map<String, Value>,
    key: &str,
    def: Option<&'static AttrDef>,
    op: PatchOp,
    filter: &Filter,
    sub: Option<&str>,
    value: Option<&Value>,
    path: &PatchPath,
) -> Result<(), ScimError> {
    let value = value.cloned().unwrap_or(Value::Null);
    let matched: Vec<usize> = match container.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter(|(_, item)| filter.eval(item, def))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    };
    if matched.is_empty() {
        return match op {
            // Identity providers remove members that may already be gone;
            // treating that as done keeps them from retrying forever.
            PatchOp::Remove => Ok(()),
            PatchOp::Replace => Err(no_target_filtered(path)),
            PatchOp::Add => add_seeded(container, key, filter, sub, value, path),
        };
    }
    let Some(Value::Array(items)) = container.get_mut(key) else {
        return Err(no_target_filtered(path));
    };
    match (op, sub) {
        (PatchOp::Remove, None) => {
            let mut index = 0;
            items.retain(|_| {
                let keep = !matched.contains(&index);
                index += 1;
                keep
            });
            if items.is_empty() {
                container.remove(key);
            }
        }
        (PatchOp::Remove, Some(sub)) => {
            for &i in &matched {
                if let Some(Value::Object(item)) = items.get_mut(i) {
                    remove_ci(item, sub);
                }
            }
        }
        (_, Some(sub)) => {
            for &i in &matched {
                if let Some(Value::Object(item)) = items.get_mut(i) {
                    write_sub(item, sub, (!value.is_null()).then(|| value.clone()));
                }
            }
            settle_primary(items, &matched);
        }
        (PatchOp::Replace, None) => {
            // RFC 7644 §3.5.2.3: every matching value is replaced.
            for &i in &matched {
                if let Some(slot) = items.get_mut(i) {
                    *slot = value.clone();
                }
            }
            settle_primary(items, &matched);
        }
        (PatchOp::Add, None) => {
            let Value::Object(new) = &value else {
                return Err(ScimError::invalid_value(format!(
                    "adding to {} needs an object of sub-attributes",
                    path_text(path)
                )));
            };
            for &i in &matched {
                if let Some(Value::Object(item)) = items.get_mut(i) {
                    for (k, v) in new {
                        set_ci(item, k, v.clone());
                    }
                }
            }
            settle_primary(items, &matched);
        }
    }
    Ok(())
}

/// Entra ID adds `emails[type eq "work"].value` to users with no work email
/// yet: when the filter only states equalities, the new value is built from
/// them. Any other filter matching nothing has no target.
fn add_seeded(
    container: &mut Map<String, Value>,
    key: &str,
    filter: &Filter,
    sub: Option<&str>,
    value: Value,
    path: &PatchPath,
) -> Result<(), ScimError> {
    let mut seed = Map::new();
    if !collect_equalities(filter, &mut seed) {
        return Err(no_target_filtered(path));
    }
    match (sub, value) {
        (_, Value::Null) => return Ok(()),
        (Some(sub), value) => set_ci(&mut seed, sub, value),
        (None, Value::Object(new)) => {
            for (k, v) in new {
                set_ci(&mut seed, &k, v);
            }
        }
        (None, _) => {
            return Err(ScimError::invalid_value(format!(
                "adding to {} needs an object of sub-attributes",
                path_text(path)
            )));
        }
    }
    let slot = container
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(items) = slot else {
        return Err(no_target_filtered(path));
    };
    items.push(Value::Object(seed));
    let last = items.len() - 1;
    settle_primary(items, &[last]);
    Ok(())
}

fn collect_equalities(filter: &Filter, out: &mut Map<String, Value>) -> bool {
    match filter {
        Filter::Compare(path, CompareOp::Eq, value) if path.urn.is_none() && path.sub.is_none() => {
            let value = match value {
                CompValue::String(s) => Value::String(s.clone()),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Bool(b) => Value::Bool(*b),
                CompValue::Null => return false,
            };
            out.insert(path.name.clone(), value);
            true
        }
        Filter::And(all) => all.iter().all(|f| collect_equalities(f, out)),
        _ => false,
    }
}

/// RFC 7644 §3.5.2: making one value primary makes the others not primary.
fn settle_primary(items: &mut [Value], touched: &[usize]) {
    let is_primary = |item: &Value| match item.as_object().and_then(|o| get_ci_map(o, "primary")) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => parse_bool(s) == Some(true),
        _ => false,
    };
    let Some(&winner) = touched
        .iter()
        .rev()
        .find(|&&i| items.get(i).is_some_and(is_primary))
    else {
        return;
    };
    for (i, item) in items.iter_mut().enumerate() {
        if i != winner
            && is_primary(item)
            && let Value::Object(item) = item
        {
            set_ci(item, "primary", Value::Bool(false));
        }
    }
}

/// The object an attribute lives in: the resource, or an extension's object
/// (created when `create`).
fn container_mut<'a>(
    root: &'a mut Map<String, Value>,
    urn: Option<&str>,
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let Some(urn) = urn else {
        return Some(root);
    };
    let key = existing_key(root, urn).unwrap_or_else(|| urn.to_owned());
    if create {
        let slot = root
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
    }
    root.get_mut(&key).and_then(Value::as_object_mut)
}

/// The key to use for `name`: the one already present in any case, else the
/// canonical name, else the name as written.
fn key_for(container: &Map<String, Value>, name: &str, def: Option<&'static AttrDef>) -> String {
    existing_key(container, name)
        .or_else(|| def.map(|d| d.name.to_owned()))
        .unwrap_or_else(|| name.to_owned())
}

fn existing_key(map: &Map<String, Value>, name: &str) -> Option<String> {
    if map.contains_key(name) {
        return Some(name.to_owned());
    }
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn set_ci(map: &mut Map<String, Value>, key: &str, value: Value) {
    let key = existing_key(map, key).unwrap_or_else(|| key.to_owned());
    map.insert(key, value);
}

fn remove_ci(map: &mut Map<String, Value>, key: &str) {
    if let Some(key) = existing_key(map, key) {
        map.remove(&key);
    }
}

fn no_target(attr: &AttrPath) -> ScimError {
    ScimError::no_target(format!("{} has no values to change", attr.name))
}

fn no_target_filtered(path: &PatchPath) -> ScimError {
    ScimError::no_target(format!(
        "no value of {} matches the filter",
        path_text(path)
    ))
}

fn path_text(path: &PatchPath) -> String {
    match &path.attr.urn {
        Some(urn) => format!("{urn}:{}", path.attr.name),
        None => path.attr.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ScimType;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, USER_SCHEMA};

    fn user() -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "id": "u1",
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "displayName": "Babs",
            "active": true,
            "emails": [
                {"value": "b@work.example", "type": "work", "primary": true},
                {"value": "b@home.example", "type": "home"}
            ],
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        })
    }

    fn group() -> Value {
        json!({
            "schemas": [GROUP_SCHEMA],
            "id": "g1",
            "displayName": "Eng",
            "members": [{"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}],
            "meta": {"resourceType": "Group"}
        })
    }

    fn body(operations: Value) -> Value {
        json!({"schemas": [PATCH_OP_SCHEMA], "Operations": operations})
    }

    /// Applies `operations` to `resource` and compares with `expected`.
    fn check(kind: ResourceKind, mut resource: Value, operations: Value, expected: Value) {
        let request = PatchRequest::from_json(&body(operations.clone()))
            .unwrap_or_else(|e| panic!("{operations}: {e:?}"));
        apply_patch(&mut resource, kind, &request)
            .unwrap_or_else(|e| panic!("{operations}: {e:?}"));
        assert_eq!(resource, expected, "{operations}");
    }

    /// Applies `operations` and expects an error with `scim_type`, leaving the resource unchanged.
    fn fails(kind: ResourceKind, resource: Value, operations: Value, scim_type: ScimType) {
        let mut copy = resource.clone();
        let result = PatchRequest::from_json(&body(operations.clone()))
            .and_then(|request| apply_patch(&mut copy, kind, &request));
        let error = result.expect_err(&operations.to_string());
        assert_eq!(error.scim_type, Some(scim_type), "{operations}: {error:?}");
        assert_eq!(copy, resource, "a failed PATCH changes nothing");
    }

    fn with(mut base: Value, changes: Value) -> Value {
        let (Some(base_map), Value::Object(changes)) = (base.as_object_mut(), changes) else {
            panic!("objects expected");
        };
        for (k, v) in changes {
            if v.is_null() {
                base_map.remove(&k);
            } else {
                base_map.insert(k, v);
            }
        }
        base
    }

    #[test]
    fn rfc7644_3_5_2_request_parsing() {
        let ok = |b: Value| PatchRequest::from_json(&b).unwrap_or_else(|e| panic!("{b}: {e:?}"));
        let request = ok(json!({"Operations": [{"op": "ADD", "path": "title", "value": "x"}]}));
        assert_eq!(request.operations[0].op, PatchOp::Add);
        let request = ok(
            json!({"schemas": [PATCH_OP_SCHEMA], "operations": [{"OP": "remove", "PATH": "title"}]}),
        );
        assert_eq!(request.operations[0].op, PatchOp::Remove);
        for (bad, scim_type) in [
            (json!([]), ScimType::InvalidSyntax),
            (
                json!({"schemas": [USER_SCHEMA], "Operations": []}),
                ScimType::InvalidSyntax,
            ),
            (json!({"Operations": {}}), ScimType::InvalidSyntax),
            (
                json!({"Operations": [{"op": "move", "path": "a"}]}),
                ScimType::InvalidSyntax,
            ),
            (
                json!({"Operations": [{"path": "a"}]}),
                ScimType::InvalidSyntax,
            ),
            (json!({"Operations": ["add"]}), ScimType::InvalidSyntax),
            (
                json!({"Operations": [{"op": "remove"}]}),
                ScimType::NoTarget,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "title"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "replace", "value": "x"}]}),
                ScimType::InvalidValue,
            ),
            (
                json!({"Operations": [{"op": "add", "path": "a[", "value": 1}]}),
                ScimType::InvalidPath,
            ),
            (
                json!({"Operations": [{"op": "add", "path": 3, "value": 1}]}),
                ScimType::InvalidPath,
            ),
        ] {
            let error = PatchRequest::from_json(&bad).expect_err(&bad.to_string());
            assert_eq!(error.scim_type, Some(scim_type), "{bad}");
        }
    }

    #[test]
    fn rfc7644_3_5_2_1_add() {
        let u = user();
        let cases = [
            // A new simple attribute.
            (
                json!([{"op": "add", "path": "title", "value": "Boss"}]),
                with(u.clone(), json!({"title": "Boss"})),
            ),
            // An existing simple attribute is replaced.
            (
                json!([{"op": "add", "path": "displayName", "value": "B"}]),
                with(u.clone(), json!({"displayName": "B"})),
            ),
            // A sub-attribute.
            (
                json!([{"op": "add", "path": "name.middleName", "value": "J"}]),
                with(
                    u.clone(),
                    json!({"name": {"givenName": "Barbara", "familyName": "Jensen", "middleName": "J"}}),
                ),
            ),
            // A complex value merges.
            (
                json!([{"op": "add", "path": "name", "value": {"middleName": "J"}}]),
                with(
                    u.clone(),
                    json!({"name": {"givenName": "Barbara", "familyName": "Jensen", "middleName": "J"}}),
                ),
            ),
            // Multi-valued values are appended without duplicates; a new primary demotes the old one.
            (
                json!([{"op": "add", "path": "emails", "value": [{"value": "b@home.example", "type": "home"}, {"value": "n@x", "type": "other", "primary": true}]}]),
                with(
                    u.clone(),
                    json!({"emails": [
                 {"value": "b@work.example", "type": "work", "primary": false},
                 {"value": "b@home.example", "type": "home"},
                 {"value": "n@x", "type": "other", "primary": true}]}),
                ),
            ),
            // An extension attribute by its URN-prefixed path.
            (
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Eng"}]),
                with(
                    u.clone(),
                    json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], ENTERPRISE_USER_SCHEMA: {"department": "Eng"}}),
                ),
            ),
            (
                json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", "value": "m1"}]),
                with(
                    u.clone(),
                    json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], ENTERPRISE_USER_SCHEMA: {"manager": {"value": "m1"}}}),
                ),
            ),
            // Adding a value already there updates its sub-attributes.
            (
                json!([{"op": "add", "path": "emails", "value": {"value": "b@home.example", "primary": true}}]),
                with(
                    u.clone(),
                    json!({"emails": [
                 {"value": "b@work.example", "type": "work", "primary": false},
                 {"value": "b@home.example", "type": "home", "primary": true}]}),
                ),
            ),
            // Without a path the value holds attributes.
            (
                json!([{"op": "add", "value": {"title": "Boss", "nickName": "B"}}]),
                with(u.clone(), json!({"title": "Boss", "nickName": "B"})),
            ),
        ];
        for (operations, expected) in cases {
            check(ResourceKind::User, u.clone(), operations, expected);
        }
    }

    #[test]
    fn rfc7644_3_5_2_2_remove() {
        let u = user();
        let cases = [
            (
                json!([{"op": "remove", "path": "displayName"}]),
                with(u.clone(), json!({"displayName": null})),
            ),
            (json!([{"op": "remove", "path": "nickName"}]), u.clone()),
            (
                json!([{"op": "remove", "path": "name.givenName"}]),
                with(u.clone(), json!({"name": {"familyName": "Jensen"}})),
            ),
            (
                json!([{"op": "remove", "path": "emails"}]),
                with(u.clone(), json!({"emails": null})),
            ),
            (
                json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
                with(
                    u.clone(),
                    json!({"emails": [{"value": "b@work.example", "type": "work", "primary": true}]}),
                ),
            ),
            (
                json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
                with(
                    u.clone(),
                    json!({"emails": [{"value": "b@work.example", "type": "work"}, {"value": "b@home.example", "type": "home"}]}),
                ),
            ),
            // A filter matching nothing removes nothing, successfully.
            (
                json!([{"op": "remove", "path": "emails[type eq \"fax\"]"}]),
                u.clone(),
            ),
            (
                json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}]),
                u.clone(),
            ),
        ];
        for (operations, expected) in cases {
            check(ResourceKind::User, u.clone(), operations, expected);
        }
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}, {"op": "remove", "path": "members[value eq \"u2\"]"}]),
            with(group(), json!({"members": null})),
        );
    }

    #[test]
    fn rfc7644_3_5_2_3_replace() {
        let u = user();
        let cases = [
            (
                json!([{"op": "replace", "path": "displayName", "value": "New"}]),
                with(u.clone(), json!({"displayName": "New"})),
            ),
            (
                json!([{"op": "replace", "path": "title", "value": "New"}]),
                with(u.clone(), json!({"title": "New"})),
            ),
            (
                json!([{"op": "replace", "path": "title", "value": null}]),
                u.clone(),
            ),
            // A complex attribute keeps the sub-attributes not given.
            (
                json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
                with(
                    u.clone(),
                    json!({"name": {"givenName": "Babs", "familyName": "Jensen"}}),
                ),
            ),
            // A multi-valued attribute without a filter is replaced whole.
            (
                json!([{"op": "replace", "path": "emails", "value": [{"value": "only@x"}]}]),
                with(u.clone(), json!({"emails": [{"value": "only@x"}]})),
            ),
            // Matching values are replaced whole.
            (
                json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h2@x", "type": "home"}}]),
                with(
                    u.clone(),
                    json!({"emails": [{"value": "b@work.example", "type": "work", "primary": true}, {"value": "h2@x", "type": "home"}]}),
                ),
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "w2@x"}]),
                with(
                    u.clone(),
                    json!({"emails": [{"value": "w2@x", "type": "work", "primary": true}, {"value": "b@home.example", "type": "home"}]}),
                ),
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
                with(
                    u.clone(),
                    json!({"emails": [{"value": "b@work.example", "type": "work", "primary": false}, {"value": "b@home.example", "type": "home", "primary": true}]}),
                ),
            ),
            // An attribute of the core schema by its URN.
            (
                json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:displayName", "value": "U"}]),
                with(u.clone(), json!({"displayName": "U"})),
            ),
            // Unknown attributes are not stored.
            (
                json!([{"op": "replace", "path": "favouriteColour", "value": "red"}]),
                u.clone(),
            ),
        ];
        for (operations, expected) in cases {
            check(ResourceKind::User, u.clone(), operations, expected);
        }
    }

    #[test]
    fn rfc7644_3_5_2_3_replace_without_target_is_no_target() {
        fails(
            ResourceKind::User,
            user(),
            json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]),
            ScimType::NoTarget,
        );
        fails(
            ResourceKind::User,
            user(),
            json!([{"op": "add", "path": "emails[type ne \"fax\" and type ne \"work\" and type ne \"home\"].value", "value": "x"}]),
            ScimType::NoTarget,
        );
    }

    #[test]
    fn rfc7644_3_5_2_read_only_attributes() {
        // Repeating `id` or `meta` unchanged is harmless.
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "replace", "value": {"id": "u1", "displayName": "X"}}]),
            with(user(), json!({"displayName": "X"})),
        );
        for operations in [
            json!([{"op": "replace", "path": "id", "value": "other"}]),
            json!([{"op": "remove", "path": "id"}]),
            json!([{"op": "replace", "value": {"id": "other"}}]),
            json!([{"op": "replace", "path": "meta.version", "value": "W/\"9\""}]),
            json!([{"op": "remove", "path": "meta"}]),
        ] {
            fails(ResourceKind::User, user(), operations, ScimType::Mutability);
        }
    }

    #[test]
    fn rfc7644_3_5_2_atomic_and_validated() {
        // The second operation fails, so the first is not kept either.
        fails(
            ResourceKind::User,
            user(),
            json!([{"op": "replace", "path": "displayName", "value": "X"}, {"op": "replace", "path": "active", "value": "perhaps"}]),
            ScimType::InvalidValue,
        );
        fails(
            ResourceKind::User,
            user(),
            json!([{"op": "remove", "path": "userName"}]),
            ScimType::InvalidValue,
        );
        fails(
            ResourceKind::Group,
            group(),
            json!([{"op": "replace", "path": "displayName", "value": ""}]),
            ScimType::InvalidValue,
        );
        fails(
            ResourceKind::Group,
            group(),
            json!([{"op": "add", "path": "members", "value": [{"display": "no id"}]}]),
            ScimType::InvalidValue,
        );
    }

    #[test]
    fn password_is_never_stored_by_patch() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "replace", "value": {"password": "secret"}}, {"op": "add", "path": "password", "value": "s"}]),
            user(),
        );
    }

    #[test]
    fn entra_capitalised_op() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Replace", "path": "displayName", "value": "E"}, {"op": "Add", "path": "title", "value": "T"}, {"op": "Remove", "path": "nickName"}]),
            with(user(), json!({"displayName": "E", "title": "T"})),
        );
    }

    #[test]
    fn entra_boolean_strings() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
            with(user(), json!({"active": false})),
        );
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Replace", "path": "emails[type eq \"home\"].primary", "value": "True"}]),
            with(
                user(),
                json!({"emails": [{"value": "b@work.example", "type": "work", "primary": false}, {"value": "b@home.example", "type": "home", "primary": true}]}),
            ),
        );
    }

    #[test]
    fn entra_remove_members_by_value() {
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}]),
            with(
                group(),
                json!({"members": [{"value": "u2", "type": "User"}]}),
            ),
        );
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "Remove", "path": "members", "value": [{"value": "nobody"}]}]),
            group(),
        );
    }

    #[test]
    fn entra_add_member_with_null_ref() {
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "Add", "path": "members", "value": [{"value": "u3", "$ref": null}, {"value": "u1", "$ref": null}]}]),
            with(
                group(),
                json!({"members": [{"value": "u1", "type": "User"}, {"value": "u2", "type": "User"}, {"value": "u3"}]}),
            ),
        );
    }

    #[test]
    fn entra_add_email_by_value_path() {
        let mut no_work = with(
            user(),
            json!({"emails": [{"value": "b@home.example", "type": "home"}]}),
        );
        check(
            ResourceKind::User,
            no_work.clone(),
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@x"}]),
            with(
                no_work.clone(),
                json!({"emails": [{"value": "b@home.example", "type": "home"}, {"type": "work", "value": "w@x"}]}),
            ),
        );
        no_work["emails"] = json!([]);
        check(
            ResourceKind::User,
            with(user(), json!({"emails": null})),
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@x"}]),
            with(
                user(),
                json!({"emails": [{"type": "work", "value": "w@x"}]}),
            ),
        );
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w2@x"}]),
            with(
                user(),
                json!({"emails": [{"value": "w2@x", "type": "work", "primary": true}, {"value": "b@home.example", "type": "home"}]}),
            ),
        );
    }

    #[test]
    fn entra_pathless_replace_with_dotted_and_urn_keys() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Replace", "value": {
                "name.givenName": "Babs",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "7",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "m1"},
                "active": "False",
            }}]),
            with(
                user(),
                json!({
                    "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                    "name": {"givenName": "Babs", "familyName": "Jensen"},
                    "active": false,
                    ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7", "manager": {"value": "m1"}},
                }),
            ),
        );
    }

    #[test]
    fn entra_pathless_add_with_extension_object() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "Add", "value": {
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Ops", "manager.value": "m2"},
                "emails[type eq \"work\"].value": "w3@x",
            }}]),
            with(
                user(),
                json!({
                    "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                    "emails": [{"value": "w3@x", "type": "work", "primary": true}, {"value": "b@home.example", "type": "home"}],
                    ENTERPRISE_USER_SCHEMA: {"department": "Ops", "manager": {"value": "m2"}},
                }),
            ),
        );
        // Removing the last extension attribute drops the extension from `schemas`.
        let extended = with(
            user(),
            json!({"schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA], ENTERPRISE_USER_SCHEMA: {"department": "Ops"}}),
        );
        check(
            ResourceKind::User,
            extended,
            json!([{"op": "Remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}]),
            user(),
        );
    }

    #[test]
    fn okta_deactivate_pathless_replace() {
        check(
            ResourceKind::User,
            user(),
            json!([{"op": "replace", "value": {"active": false}}]),
            with(user(), json!({"active": false})),
        );
    }

    #[test]
    fn okta_group_rename_with_id_in_value() {
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "replace", "value": {"id": "g1", "displayName": "Engineering"}}]),
            with(group(), json!({"displayName": "Engineering"})),
        );
        // A stored document without `id` ignores the one the request repeats.
        let stored = with(group(), json!({"id": null}));
        check(
            ResourceKind::Group,
            stored.clone(),
            json!([{"op": "replace", "value": {"id": "g1", "displayName": "Engineering"}}]),
            with(stored, json!({"displayName": "Engineering"})),
        );
    }

    #[test]
    fn okta_remove_and_add_members_in_one_request() {
        check(
            ResourceKind::Group,
            group(),
            json!([
                {"op": "remove", "path": "members[value eq \"u2\"]"},
                {"op": "add", "path": "members", "value": [{"value": "u9", "display": "Nine"}]}
            ]),
            with(
                group(),
                json!({"members": [{"value": "u1", "type": "User"}, {"value": "u9", "display": "Nine"}]}),
            ),
        );
    }

    #[test]
    fn okta_replace_members_whole() {
        check(
            ResourceKind::Group,
            group(),
            json!([{"op": "replace", "path": "members", "value": [{"value": "u5"}]}]),
            with(group(), json!({"members": [{"value": "u5"}]})),
        );
    }
}
