//! The SCIM filter language (RFC 7644 §3.4.2.2): a hand-written
//! recursive-descent parser and an in-memory evaluator.
//!
//! The parser reads each byte once and only recurses on parentheses, `not`
//! and value paths, whose nesting is capped, so any input finishes in time
//! linear in its length. Chains of `and` / `or` are kept flat for the same
//! reason: evaluating or dropping them never recurses deeply.

use std::cmp::Ordering;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ScimError;
use crate::schema::{self, AttrDef, AttrType};

/// The longest filter or PATCH path accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// The deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_FILTER_DEPTH: usize = 50;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every inner filter holds (two or more).
    And(Vec<Filter>),
    /// At least one inner filter holds (two or more).
    Or(Vec<Filter>),
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// `attr pr`: the attribute has a non-empty value.
    Present(AttrPath),
    /// `attr op value`.
    Compare(AttrPath, CompareOp, CompValue),
    /// `attr[filter]`: some value of the (complex) attribute meets the filter,
    /// whose paths are relative to that value.
    ValuePath(AttrPath, Box<Filter>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `co`
    Co,
    /// `sw`
    Sw,
    /// `ew`
    Ew,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

/// The literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// `null`
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, kept as written so `externalId eq 0042` still compares as text.
    Number(serde_json::Number),
    /// A quoted string, or a bare word (Entra ID sends `externalId eq jyoung`).
    String(String),
}

/// An attribute path `[urn:…:]name[.sub]`.
///
/// A core-schema URN prefix is dropped while parsing, because core attributes
/// sit at the top of a resource. A whole extension URN used as a path (PATCH
/// and projection allow it) is held as `name`, which is where the extension
/// sits in the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The extension schema URN, when the path is prefixed with one.
    pub urn: Option<String>,
    /// The attribute name as written.
    pub name: String,
    /// The sub-attribute name, if any.
    pub sub: Option<String>,
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath` or `valuePath [ "." subAttr ]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute (with a sub-attribute only when there is no filter).
    pub attr: AttrPath,
    /// The value filter of `attr[filter]`.
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter: `emails[type eq "work"].value`.
    pub sub: Option<String>,
}

/// An attribute the store can index, found by [`Filter::simple_eq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexedAttr {
    /// `id`
    Id,
    /// `externalId`
    ExternalId,
    /// `userName`
    UserName,
    /// `displayName`
    DisplayName,
    /// `members.value`, or `members[value eq …]`.
    MemberValue,
}

impl IndexedAttr {
    /// Whether the lookup must respect case (`userName` and `displayName` do not).
    pub fn case_exact(self) -> bool {
        matches!(self, Self::Id | Self::ExternalId | Self::MemberValue)
    }
}

impl AttrPath {
    /// Parses `[urn:…:]name[.sub]` (400 invalidPath when malformed).
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        parse_attr_path(text).map_err(ScimError::invalid_path)
    }

    /// Whether this is the core attribute `name` (any case), with `sub` if given.
    pub fn is(&self, name: &str, sub: Option<&str>) -> bool {
        self.urn.is_none()
            && self.name.eq_ignore_ascii_case(name)
            && match (&self.sub, sub) {
                (None, None) => true,
                (Some(have), Some(want)) => have.eq_ignore_ascii_case(want),
                _ => false,
            }
    }
}

impl PatchPath {
    /// Parses a PATCH path (400 invalidPath when malformed).
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_path(format!(
                "path is longer than {MAX_FILTER_LEN} bytes"
            )));
        }
        let mut parser = Parser::new(text);
        parser
            .patch_path()
            .map_err(|e| ScimError::invalid_path(format!("invalid path {text:?}: {e}")))
    }
}

impl Filter {
    /// Parses a filter expression (400 invalidFilter when malformed or too big).
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_filter(format!(
                "filter is longer than {MAX_FILTER_LEN} bytes"
            )));
        }
        let mut parser = Parser::new(text);
        let filter = parser
            .whole_filter()
            .map_err(|e| ScimError::invalid_filter(format!("invalid filter {text:?}: {e}")))?;
        Ok(filter)
    }

    /// Whether a resource, in its SCIM JSON form, meets the filter.
    pub fn matches(&self, resource: &Value) -> bool {
        self.eval(resource, None)
    }

    /// The `(attribute, value)` of a filter that is a single equality on an
    /// indexed attribute, so the store can use an index instead of a scan.
    pub fn simple_eq(&self) -> Option<(IndexedAttr, String)> {
        match self {
            Filter::Compare(path, CompareOp::Eq, value) => {
                let value = value.as_text()?;
                let attr = if path.is("id", None) {
                    IndexedAttr::Id
                } else if path.is("externalId", None) {
                    IndexedAttr::ExternalId
                } else if path.is("userName", None) {
                    IndexedAttr::UserName
                } else if path.is("displayName", None) {
                    IndexedAttr::DisplayName
                } else if path.is("members", Some("value")) {
                    IndexedAttr::MemberValue
                } else {
                    return None;
                };
                Some((attr, value))
            }
            Filter::ValuePath(path, inner) if path.is("members", None) => match inner.as_ref() {
                Filter::Compare(sub, CompareOp::Eq, value) if sub.is("value", None) => {
                    Some((IndexedAttr::MemberValue, value.as_text()?))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Evaluates against `node`: a resource when `parent` is `None`, else one
    /// value of the complex attribute `parent` (inside a value filter).
    pub(crate) fn eval(&self, node: &Value, parent: Option<&'static AttrDef>) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.eval(node, parent)),
            Filter::Or(any) => any.iter().any(|f| f.eval(node, parent)),
            Filter::Not(inner) => !inner.eval(node, parent),
            Filter::Present(path) => {
                let (_, values) = resolve(node, parent, path);
                values.into_iter().any(is_present)
            }
            Filter::Compare(path, op, expected) => {
                let (def, values) = resolve(node, parent, path);
                if values.iter().all(|v| v.is_null()) {
                    // An unassigned attribute equals null and differs from anything else.
                    return match op {
                        CompareOp::Eq => *expected == CompValue::Null,
                        CompareOp::Ne => *expected != CompValue::Null,
                        _ => false,
                    };
                }
                values.into_iter().any(|actual| {
                    // A complex value compared without a sub-attribute compares its `value`.
                    let (actual, def) = match actual {
                        Value::Object(map) => (
                            get_ci_map(map, "value").unwrap_or(&Value::Null),
                            def.and_then(|d| d.sub("value")),
                        ),
                        other => (other, def),
                    };
                    compare(actual, *op, expected, def)
                })
            }
            Filter::ValuePath(path, inner) => {
                let (def, values) = resolve(node, parent, path);
                values.into_iter().any(|value| inner.eval(value, def))
            }
        }
    }
}

impl CompValue {
    /// The literal as text, for index lookups; `None` for `null` and booleans.
    fn as_text(&self) -> Option<String> {
        match self {
            CompValue::String(s) => Some(s.clone()),
            CompValue::Number(n) => Some(n.to_string()),
            CompValue::Null | CompValue::Bool(_) => None,
        }
    }
}

/// Looks a key up in an object, ignoring case, as attribute names are.
pub fn get_ci<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_object().and_then(|map| get_ci_map(map, key))
}

pub(crate) fn get_ci_map<'a>(
    map: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The values an attribute path selects in `node`, flattened over
/// multi-valued attributes, with the definition of the selected attribute.
fn resolve<'a>(
    node: &'a Value,
    parent: Option<&'static AttrDef>,
    path: &AttrPath,
) -> (Option<&'static AttrDef>, Vec<&'a Value>) {
    let (mut def, found) = match parent {
        Some(parent) => (parent.sub(&path.name), get_ci(node, &path.name)),
        None if path.urn.is_some() => {
            let urn = path.urn.as_deref().unwrap_or_default();
            let container = get_ci(node, urn);
            (
                schema::find_attr(None, Some(urn), &path.name),
                container.and_then(|c| get_ci(c, &path.name)),
            )
        }
        None => match get_ci(node, &path.name) {
            Some(found) => (schema::find_attr(None, None, &path.name), Some(found)),
            None => find_in_extensions(node, &path.name),
        },
    };
    let mut values = Vec::new();
    flatten(found, &mut values);
    if let Some(sub) = &path.sub {
        def = def.and_then(|d| d.sub(sub));
        let mut subs = Vec::new();
        for value in values {
            flatten(get_ci(value, sub), &mut subs);
        }
        values = subs;
    }
    (def, values)
}

/// An unqualified name that is not a core attribute may still name an
/// extension attribute; RFC 7644 lets clients omit the URN when unambiguous.
fn find_in_extensions<'a>(
    node: &'a Value,
    name: &str,
) -> (Option<&'static AttrDef>, Option<&'a Value>) {
    let Some(map) = node.as_object() else {
        return (None, None);
    };
    for (key, container) in map {
        if !key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
            continue;
        }
        if let Some(found) = get_ci(container, name) {
            return (schema::find_attr(None, Some(key), name), Some(found));
        }
    }
    (None, None)
}

fn flatten<'a>(value: Option<&'a Value>, out: &mut Vec<&'a Value>) {
    match value {
        Some(Value::Array(items)) => out.extend(items.iter()),
        Some(value) => out.push(value),
        None => {}
    }
}

/// RFC 7644 §3.4.2.2 `pr`: a non-empty value, or a complex value with a non-empty part.
pub(crate) fn is_present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(map) => map.values().any(is_present),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue, def: Option<&AttrDef>) -> bool {
    let case_exact = def.is_some_and(|d| d.case_exact);
    let is_date = def.is_some_and(|d| d.ty == AttrType::DateTime);
    match (actual, expected) {
        (_, CompValue::Null) => match op {
            CompareOp::Eq => actual.is_null(),
            CompareOp::Ne => !actual.is_null(),
            _ => false,
        },
        (Value::String(a), CompValue::String(e)) => {
            if is_date && let (Some(a), Some(e)) = (parse_date(a), parse_date(e)) {
                return ordered(op, a.cmp(&e));
            }
            compare_text(a, op, e, case_exact)
        }
        (Value::String(a), CompValue::Number(n)) => compare_text(a, op, &n.to_string(), true),
        (Value::String(a), CompValue::Bool(b)) => {
            parse_bool(a).is_some_and(|a| equality(op, a == *b))
        }
        (Value::Bool(a), CompValue::Bool(b)) => equality(op, a == b),
        (Value::Bool(a), CompValue::String(s)) => {
            parse_bool(s).is_some_and(|b| equality(op, *a == b))
        }
        (Value::Number(a), CompValue::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| ordered(op, o)),
            _ => false,
        },
        (Value::Number(a), CompValue::String(s)) => match (a.as_f64(), s.trim().parse::<f64>()) {
            (Some(a), Ok(b)) => a.partial_cmp(&b).is_some_and(|o| ordered(op, o)),
            _ => false,
        },
        _ => false,
    }
}

fn compare_text(actual: &str, op: CompareOp, expected: &str, case_exact: bool) -> bool {
    let (a, e) = if case_exact {
        (actual.to_owned(), expected.to_owned())
    } else {
        (actual.to_lowercase(), expected.to_lowercase())
    };
    match op {
        CompareOp::Co => a.contains(&e),
        CompareOp::Sw => a.starts_with(&e),
        CompareOp::Ew => a.ends_with(&e),
        _ => ordered(op, a.cmp(&e)),
    }
}

fn ordered(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        // Substring operators on dates or numbers have no meaning.
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

fn equality(op: CompareOp, equal: bool) -> bool {
    match op {
        CompareOp::Eq => equal,
        CompareOp::Ne => !equal,
        _ => false,
    }
}

fn parse_date(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Booleans as strings, in any case, as Entra ID sends them.
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn parse_attr_path(text: &str) -> Result<AttrPath, String> {
    if let Some(urn) = schema::extension_schema(text) {
        return Ok(AttrPath {
            urn: None,
            name: urn.to_owned(),
            sub: None,
        });
    }
    let (urn, rest) = if text
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        let Some(split) = text.rfind(':') else {
            return Err(format!("{text:?} is not an attribute path"));
        };
        let urn = &text[..split];
        let urn = if schema::is_core_schema(urn) {
            None
        } else {
            Some(schema::extension_schema(urn).unwrap_or(urn).to_owned())
        };
        (urn, &text[split + 1..])
    } else {
        (None, text)
    };
    let mut parts = rest.split('.');
    let name = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() {
        return Err(format!("{text:?} has more than one sub-attribute"));
    }
    if !valid_name(name) || sub.is_some_and(|s| !valid_name(s)) {
        return Err(format!("{text:?} is not an attribute path"));
    }
    Ok(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

/// RFC 7644 ATTRNAME (`ALPHA *(nameChar)`), plus `$ref`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

type ParseResult<T> = Result<T, String>;

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            depth: 0,
        }
    }

    fn whole_filter(&mut self) -> ParseResult<Filter> {
        let filter = self.or_expr()?;
        self.skip_ws();
        if self.pos < self.src.len() {
            return Err(self.unexpected());
        }
        Ok(filter)
    }

    fn patch_path(&mut self) -> ParseResult<PatchPath> {
        self.skip_ws();
        let start = self.pos;
        let text = self.word();
        if text.is_empty() {
            return Err(format!("expected an attribute at byte {start}"));
        }
        let attr = parse_attr_path(text)?;
        let mut filter = None;
        let mut sub = None;
        if self.peek() == Some(b'[') {
            if attr.sub.is_some() {
                return Err(format!("a value filter cannot follow {text:?}"));
            }
            filter = Some(self.bracketed()?);
            sub = self.sub_after_bracket()?;
        }
        self.skip_ws();
        if self.pos < self.src.len() {
            return Err(self.unexpected());
        }
        Ok(PatchPath { attr, filter, sub })
    }

    fn or_expr(&mut self) -> ParseResult<Filter> {
        let mut terms = vec![self.and_expr()?];
        while self.keyword("or") {
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Filter::Or(terms)
        })
    }

    fn and_expr(&mut self) -> ParseResult<Filter> {
        let mut terms = vec![self.unary()?];
        while self.keyword("and") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Filter::And(terms)
        })
    }

    fn unary(&mut self) -> ParseResult<Filter> {
        self.skip_ws();
        if self.peek() == Some(b'(') {
            return self.parenthesised();
        }
        let save = self.pos;
        let word = self.word();
        if word.eq_ignore_ascii_case("not") {
            self.skip_ws();
            if self.peek() == Some(b'(') {
                return Ok(Filter::Not(Box::new(self.parenthesised()?)));
            }
        }
        self.pos = save;
        self.attr_expr()
    }

    fn parenthesised(&mut self) -> ParseResult<Filter> {
        self.enter()?;
        self.pos += 1;
        let inner = self.or_expr()?;
        self.skip_ws();
        if self.peek() != Some(b')') {
            return Err(format!("expected ')' at byte {}", self.pos));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(inner)
    }

    fn bracketed(&mut self) -> ParseResult<Filter> {
        self.enter()?;
        self.pos += 1;
        let inner = self.or_expr()?;
        self.skip_ws();
        if self.peek() != Some(b']') {
            return Err(format!("expected ']' at byte {}", self.pos));
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(inner)
    }

    /// The `.sub` right after a value filter's closing bracket, if any.
    fn sub_after_bracket(&mut self) -> ParseResult<Option<String>> {
        if self.peek() != Some(b'.') {
            return Ok(None);
        }
        self.pos += 1;
        let name = self.word();
        if !valid_name(name) {
            return Err(format!("{name:?} is not a sub-attribute name"));
        }
        Ok(Some(name.to_owned()))
    }

    fn attr_expr(&mut self) -> ParseResult<Filter> {
        self.skip_ws();
        let start = self.pos;
        let text = self.word();
        if text.is_empty() {
            return Err(match self.peek() {
                None => "unexpected end of filter".to_owned(),
                Some(_) => format!("expected an attribute at byte {start}"),
            });
        }
        let path = parse_attr_path(text)?;
        if self.peek() == Some(b'[') {
            if path.sub.is_some() {
                return Err(format!("a value filter cannot follow {text:?}"));
            }
            let inner = self.bracketed()?;
            let Some(sub) = self.sub_after_bracket()? else {
                return Ok(Filter::ValuePath(path, Box::new(inner)));
            };
            // `emails[type eq "work"].value eq "x"` (Entra ID) means a value
            // that meets both conditions.
            let sub_path = AttrPath {
                urn: None,
                name: sub,
                sub: None,
            };
            let tail = self.operator_and_value(sub_path)?;
            let inner = match inner {
                Filter::And(mut all) => {
                    all.push(tail);
                    Filter::And(all)
                }
                other => Filter::And(vec![other, tail]),
            };
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        self.operator_and_value(path)
    }

    fn operator_and_value(&mut self, path: AttrPath) -> ParseResult<Filter> {
        self.skip_ws();
        let at = self.pos;
        let op = self.word();
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            "" => return Err(format!("expected an operator at byte {at}")),
            other => return Err(format!("{other:?} is not an operator")),
        };
        let value = self.comp_value()?;
        let ordering_or_substring = !matches!(op, CompareOp::Eq | CompareOp::Ne);
        if ordering_or_substring && matches!(value, CompValue::Null | CompValue::Bool(_)) {
            return Err(format!(
                "{op:?} cannot compare with {value:?}; only eq and ne can"
            ));
        }
        Ok(Filter::Compare(path, op, value))
    }

    fn comp_value(&mut self) -> ParseResult<CompValue> {
        self.skip_ws();
        if self.peek() == Some(b'"') {
            return self.string().map(CompValue::String);
        }
        let at = self.pos;
        let word = self.word();
        if word.is_empty() {
            return Err(format!("expected a value at byte {at}"));
        }
        if word.eq_ignore_ascii_case("true") {
            return Ok(CompValue::Bool(true));
        }
        if word.eq_ignore_ascii_case("false") {
            return Ok(CompValue::Bool(false));
        }
        if word.eq_ignore_ascii_case("null") {
            return Ok(CompValue::Null);
        }
        if let Ok(number) = word.parse::<serde_json::Number>() {
            return Ok(CompValue::Number(number));
        }
        Ok(CompValue::String(word.to_owned()))
    }

    /// A JSON string literal, escapes and all.
    fn string(&mut self) -> ParseResult<String> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    let literal = &self.src[start..=i];
                    self.pos = i + 1;
                    return serde_json::from_str::<String>(literal)
                        .map_err(|e| format!("bad string at byte {start}: {e}"));
                }
                _ => i += 1,
            }
        }
        Err(format!("unterminated string at byte {start}"))
    }

    /// Consumes `keyword` (any case) if it is the next word.
    fn keyword(&mut self, keyword: &str) -> bool {
        let save = self.pos;
        self.skip_ws();
        if self.word().eq_ignore_ascii_case(keyword) {
            return true;
        }
        self.pos = save;
        false
    }

    /// The run of bytes up to the next space, quote, parenthesis or bracket.
    fn word(&mut self) -> &'a str {
        let bytes = self.src.as_bytes();
        let start = self.pos;
        while self.pos < bytes.len()
            && !matches!(
                bytes[self.pos],
                b' ' | b'\t' | b'\r' | b'\n' | b'"' | b'(' | b')' | b'[' | b']'
            )
        {
            self.pos += 1;
        }
        // Every stop byte is ASCII, so both ends are character boundaries.
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() && matches!(bytes[self.pos], b' ' | b'\t' | b'\r' | b'\n') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn enter(&mut self) -> ParseResult<()> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(format!("nesting deeper than {MAX_FILTER_DEPTH}"));
        }
        Ok(())
    }

    fn unexpected(&self) -> String {
        let rest: String = self
            .src
            .get(self.pos..)
            .unwrap_or_default()
            .chars()
            .take(20)
            .collect();
        format!("unexpected {rest:?} at byte {}", self.pos)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "jyoung",
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "displayName": "Babs Jensen",
            "title": "Tour Guide",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}
            },
            "meta": {
                "resourceType": "User",
                "created": "2010-01-23T04:56:22Z",
                "lastModified": "2011-05-13T04:42:34Z",
                "version": "W/\"a330bc54f0671c9\""
            }
        })
    }

    fn group() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1",
            "displayName": "Tour Guides",
            "members": [{"value": "u1", "type": "User"}, {"value": "g2", "type": "Group"}]
        })
    }

    /// Parses `filter` and checks whether it matches `resource`.
    fn check(resource: &Value, filter: &str, expected: bool) {
        let parsed = Filter::parse(filter).unwrap_or_else(|e| panic!("{filter}: {e:?}"));
        assert_eq!(parsed.matches(resource), expected, "{filter}");
    }

    fn rejects(filter: &str) {
        let error = Filter::parse(filter).expect_err(filter);
        assert_eq!(
            (error.status, error.scim_type),
            (400, Some(crate::ScimType::InvalidFilter)),
            "{filter}"
        );
    }

    #[test]
    fn rfc7644_3_4_2_2_operators() {
        let u = user();
        let cases = [
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"userName ne "bjensen@example.com""#, false),
            (r#"name.familyName co "ens""#, true),
            (r#"userName sw "bj""#, true),
            (r#"userName ew ".COM""#, true),
            (r#"title pr"#, true),
            (r#"nickName pr"#, false),
            (r#"title gt "A""#, true),
            (r#"title ge "tour guide""#, true),
            (r#"title lt "A""#, false),
            (r#"title le "Tour Guide""#, true),
            (r#"active eq true"#, true),
            (r#"active ne true"#, false),
            (r#"nickName eq null"#, true),
            (r#"title ne null"#, true),
            (r#"nickName ne "x""#, true),
        ];
        for (filter, expected) in cases {
            check(&u, filter, expected);
        }
    }

    #[test]
    fn rfc7644_3_4_2_2_filter_precedence() {
        let u = user();
        let cases = [
            // `and` binds tighter than `or`.
            (r#"title eq "x" and title eq "y" or active eq true"#, true),
            (r#"active eq true or title eq "x" and title eq "y""#, true),
            (
                r#"(active eq true or title eq "x") and title eq "y""#,
                false,
            ),
            (r#"not (title eq "x") and active eq true"#, true),
            (r#"not(active eq true) or title eq "x""#, false),
            (r#"((((userName sw "b"))))"#, true),
            (
                r#"userName sw "b" AND (title eq "x" OR active EQ true)"#,
                true,
            ),
        ];
        for (filter, expected) in cases {
            check(&u, filter, expected);
        }
    }

    #[test]
    fn rfc7644_3_4_2_2_case_insensitive_names_and_operators() {
        let u = user();
        check(&u, r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#, true);
        check(&u, r#"Name.FamilyName Sw "jen""#, true);
        check(&u, r#"emails.TYPE eq "WORK""#, true);
    }

    #[test]
    fn rfc7643_2_2_case_exact_attributes() {
        let u = user();
        check(&u, r#"externalId eq "jyoung""#, true);
        check(&u, r#"externalId eq "JYoung""#, false);
        check(&u, r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false);
        check(&u, r#"meta.version eq "W/\"a330bc54f0671c9\"""#, true);
        check(&u, r#"meta.version eq "w/\"A330BC54F0671C9\"""#, false);
        check(&group(), r#"members.value eq "U1""#, false);
    }

    #[test]
    fn rfc7644_3_4_2_2_urn_prefixed_paths() {
        let u = user();
        check(
            &u,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
            true,
        );
        check(
            &u,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value pr"#,
            true,
        );
        check(
            &u,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bjensen""#,
            true,
        );
        // Without the URN the extension attribute is still found.
        check(&u, r#"employeeNumber eq "701984""#, true);
        check(&u, r#"urn:other:x:employeeNumber eq "701984""#, false);
    }

    #[test]
    fn rfc7644_3_4_2_2_multi_valued_and_value_paths() {
        let u = user();
        let cases = [
            (r#"emails co "jensen.org""#, true),
            (r#"emails.value ew "@example.com""#, true),
            (
                r#"emails[type eq "work" and value co "@example.com"]"#,
                true,
            ),
            (r#"emails[type eq "home" and primary eq true]"#, false),
            (r#"emails[type eq "work" and primary eq true]"#, true),
            (r#"emails[not (type eq "work")]"#, true),
            (
                r#"emails[type eq "work"].value eq "bjensen@example.com""#,
                true,
            ),
            (
                r#"emails[type eq "home"].value eq "bjensen@example.com""#,
                false,
            ),
            (r#"emails[type eq "work"].display pr"#, false),
            (r#"name[givenName eq "barbara"]"#, true),
            (r#"userName eq "x" or emails[type eq "home"]"#, true),
        ];
        for (filter, expected) in cases {
            check(&u, filter, expected);
        }
        check(
            &group(),
            r#"members[value eq "g2" and type eq "Group"]"#,
            true,
        );
        check(&group(), r#"members.value eq "u1""#, true);
    }

    #[test]
    fn rfc7643_2_3_5_dates_compare_as_dates() {
        let u = user();
        check(
            &u,
            r#"meta.lastModified gt "2011-05-13T04:42:34.000Z""#,
            false,
        );
        check(
            &u,
            r#"meta.lastModified ge "2011-05-13T06:42:34+02:00""#,
            true,
        );
        check(&u, r#"meta.created lt "2011-01-01T00:00:00Z""#, true);
        check(
            &u,
            r#"meta.lastModified gt "2011-05-13T01:00:00-05:00""#,
            false,
        );
    }

    #[test]
    fn rfc7644_3_4_2_2_literals_and_escapes() {
        let doc = json!({"displayName": "Say \"hi\" \\ é", "externalId": "0042", "count": 3, "flag": "True"});
        check(&doc, r#"displayName eq "say \"HI\" \\ \u00e9""#, true);
        check(&doc, r#"externalId eq "0042""#, true);
        check(&doc, r#"count gt 2"#, true);
        check(&doc, r#"count le 2.5"#, false);
        check(&doc, r#"count eq 3"#, true);
        check(&doc, r#"flag eq true"#, true);
        check(&doc, r#"flag eq FALSE"#, false);
    }

    #[test]
    fn entra_unquoted_values() {
        let u = user();
        check(&u, "externalId eq jyoung", true);
        check(&u, "externalId eq jyoung and active eq True", true);
        check(&u, "(externalId eq other)", false);
        check(&json!({"externalId": "0042"}), "externalId eq 0042", true);
        assert_eq!(
            Filter::parse("externalId eq 12345")
                .ok()
                .and_then(|f| f.simple_eq()),
            Some((IndexedAttr::ExternalId, "12345".to_owned()))
        );
    }

    #[test]
    fn entra_value_path_then_sub_attribute() {
        check(
            &user(),
            r#"emails[type eq "work"].value eq "bjensen@example.com""#,
            true,
        );
    }

    #[test]
    fn pr_is_false_for_null_and_empty() {
        let doc =
            json!({"a": null, "b": "", "c": [], "d": {}, "e": [{"x": null}], "f": false, "g": 0});
        for (attr, expected) in [
            ("a", false),
            ("b", false),
            ("c", false),
            ("d", false),
            ("e", false),
            ("f", true),
            ("g", true),
            ("h", false),
        ] {
            check(&doc, &format!("{attr} pr"), expected);
        }
    }

    #[test]
    fn malformed_filters_are_invalid_filter() {
        for filter in [
            "",
            "   ",
            "userName",
            "userName eq",
            "userName xx \"a\"",
            "userName eq \"a",
            "userName eq \"bad \\q escape\"",
            "(userName eq \"a\"",
            "userName eq \"a\")",
            "userName eq \"a\" and",
            "userName eq \"a\" or or",
            "emails[type eq \"work\"",
            "emails[type eq \"work\"]]",
            "name.givenName.x eq \"a\"",
            "1abc eq \"a\"",
            "active gt true",
            "title co null",
            "not userName eq \"a\" extra",
            "name.givenName[x eq 1]",
            "emails[type eq \"work\"].value",
            "urn:only",
        ] {
            rejects(filter);
        }
    }

    #[test]
    fn limits_on_size_and_depth() {
        let long = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
        rejects(&long);
        let deep = format!("{}title pr{}", "(".repeat(51), ")".repeat(51));
        rejects(&deep);
        let ok = format!("{}title pr{}", "(".repeat(50), ")".repeat(50));
        check(&user(), &ok, true);
        let nots = format!("{}title pr{}", "not (".repeat(51), ")".repeat(51));
        rejects(&nots);
        // A long flat chain stays flat.
        let chain = vec!["title pr"; 300].join(" and ");
        check(&user(), &chain, true);
    }

    #[test]
    fn simple_eq_finds_indexable_lookups() {
        let cases = [
            (
                r#"userName eq "Alice""#,
                Some((IndexedAttr::UserName, "Alice")),
            ),
            (
                r#"USERNAME EQ "Alice""#,
                Some((IndexedAttr::UserName, "Alice")),
            ),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a""#,
                Some((IndexedAttr::UserName, "a")),
            ),
            (
                r#"externalId eq "e1""#,
                Some((IndexedAttr::ExternalId, "e1")),
            ),
            (r#"id eq "1""#, Some((IndexedAttr::Id, "1"))),
            (
                r#"displayName eq "G""#,
                Some((IndexedAttr::DisplayName, "G")),
            ),
            (
                r#"members.value eq "u1""#,
                Some((IndexedAttr::MemberValue, "u1")),
            ),
            (
                r#"members[value eq "u1"]"#,
                Some((IndexedAttr::MemberValue, "u1")),
            ),
            (r#"userName ne "a""#, None),
            (r#"userName eq "a" and active eq true"#, None),
            (r#"title eq "a""#, None),
            (r#"name.givenName eq "a""#, None),
            (r#"userName eq null"#, None),
        ];
        for (filter, expected) in cases {
            let parsed = Filter::parse(filter).expect(filter);
            assert_eq!(
                parsed.simple_eq(),
                expected.map(|(a, v)| (a, v.to_owned())),
                "{filter}"
            );
        }
        assert!(!IndexedAttr::UserName.case_exact() && IndexedAttr::Id.case_exact());
    }

    #[test]
    fn rfc7644_3_5_2_patch_paths() {
        let parse = |p: &str| PatchPath::parse(p).expect(p);
        let path = parse("members");
        assert_eq!(
            (path.attr.name.as_str(), path.filter.is_none()),
            ("members", true)
        );
        let path = parse("name.givenName");
        assert_eq!(path.attr.sub.as_deref(), Some("givenName"));
        let path = parse(r#"emails[type eq "work"].value"#);
        assert!(path.filter.is_some());
        assert_eq!(path.sub.as_deref(), Some("value"));
        let path =
            parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(
            path.attr.urn.as_deref(),
            Some(crate::ENTERPRISE_USER_SCHEMA)
        );
        assert_eq!(
            (path.attr.name.as_str(), path.attr.sub.as_deref()),
            ("manager", Some("value"))
        );
        let path = parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User");
        assert_eq!(path.attr.name, crate::ENTERPRISE_USER_SCHEMA);
        let path = parse("urn:ietf:params:scim:schemas:core:2.0:User:userName");
        assert_eq!((path.attr.urn, path.attr.name.as_str()), (None, "userName"));
        for bad in [
            "",
            "a b",
            "name.",
            "emails[",
            "emails[type eq \"w\"]x",
            "a.b.c",
            "name.x[y eq 1]",
        ] {
            let error = PatchPath::parse(bad).expect_err(bad);
            assert_eq!(error.scim_type, Some(crate::ScimType::InvalidPath), "{bad}");
        }
    }
}
