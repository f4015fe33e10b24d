//! The SCIM filter language (RFC 7644 §3.4.2.2): a parser with precedence,
//! parentheses, `not`, value paths and escapes, and an evaluator over a
//! resource's JSON.

use serde_json::Value;

use crate::ScimError;

/// Longest filter accepted, in bytes.
const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths accepted.
const MAX_DEPTH: usize = 50;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// The attribute has a non-empty value.
    Present(AttrPath),
    /// The attribute compares with a value.
    Compare(AttrPath, CompareOp, CompValue),
    /// Some element of a multi-valued attribute meets the inner filter.
    ValuePath(AttrPath, Box<Filter>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains.
    Co,
    /// Starts with.
    Sw,
    /// Ends with.
    Ew,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum CompValue {
    /// A string (quoted, or a bare word as Entra ID sends).
    Str(String),
    /// A number.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// An attribute path: `[urn:…:]attr[.sub]`, optionally with a value filter
/// (`emails[type eq "work"].value`).
#[derive(Debug, Clone, PartialEq)]
pub struct AttrPath {
    /// The schema URN prefix, if given.
    pub urn: Option<String>,
    /// The attribute name as written.
    pub attr: String,
    /// A value filter on a multi-valued attribute.
    pub filter: Option<Box<Filter>>,
    /// The sub-attribute, if any.
    pub sub: Option<String>,
}

/// A filter the store can answer with an index instead of a scan.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// `id eq "…"`.
    Id(String),
    /// `userName eq "…"` on users, `displayName eq "…"` on groups.
    Name(String),
    /// `externalId eq "…"`.
    ExternalId(String),
    /// `members.value eq "…"` or `members[value eq "…"]`.
    Member(String),
}

impl AttrPath {
    /// Parses `[urn:…:]attr[.sub]`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        let bad = || ScimError::invalid_filter(format!("{text:?} is not an attribute path"));
        let (urn, rest) = if text
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("urn:"))
            && text.len() > 4
        {
            let split = text.rfind(':').ok_or_else(bad)?;
            (Some(text[..split].to_owned()), &text[split + 1..])
        } else {
            (None, text)
        };
        let mut parts = rest.splitn(2, '.');
        let attr = parts.next().unwrap_or_default();
        let sub = parts.next();
        let valid = |name: &str| {
            name.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
        };
        if !valid(attr) || sub.is_some_and(|s| !valid(s)) {
            return Err(bad());
        }
        Ok(Self {
            urn,
            attr: attr.to_owned(),
            filter: None,
            sub: sub.map(str::to_owned),
        })
    }

    /// Whether this path names `attr` (and `sub`), ignoring case and a core URN.
    pub fn is(&self, attr: &str, sub: Option<&str>) -> bool {
        self.urn.as_deref().is_none_or(is_core_urn)
            && self.filter.is_none()
            && self.attr.eq_ignore_ascii_case(attr)
            && match (&self.sub, sub) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            }
    }

    fn case_exact(&self) -> bool {
        let attr = self.attr.to_ascii_lowercase();
        let sub = self.sub.as_deref().map(str::to_ascii_lowercase);
        matches!(attr.as_str(), "id" | "externalid")
            || (attr == "members" && matches!(sub.as_deref(), Some("value") | None))
            || (attr == "meta" && sub.as_deref() == Some("version"))
    }
}

/// Whether a URN names the core User or Group schema, whose attributes are the
/// resource's own.
pub(crate) fn is_core_urn(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(crate::USER_SCHEMA) || urn.eq_ignore_ascii_case(crate::GROUP_SCHEMA)
}

/// Parses a PATCH path: `attr`, `attr.sub`, `urn:…:attr`, `attr[filter]` or
/// `attr[filter].sub`; anything else is 400 invalidPath.
pub(crate) fn parse_patch_path(text: &str) -> Result<AttrPath, ScimError> {
    let as_path_error =
        |e: ScimError| ScimError::invalid_path(format!("path {text:?}: {}", e.detail));
    if text.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_path("paths are limited to 4096 bytes"));
    }
    // The extension itself as a path: its whole object.
    if text.eq_ignore_ascii_case(crate::ENTERPRISE_USER) {
        return Ok(AttrPath {
            urn: None,
            attr: crate::ENTERPRISE_USER.to_owned(),
            filter: None,
            sub: None,
        });
    }
    let tokens = tokenize(text).map_err(as_path_error)?;
    let mut parser = Parser {
        tokens,
        position: 0,
        depth: 0,
    };
    let Some(Token::Word(word)) = parser.next() else {
        return Err(ScimError::invalid_path(format!(
            "path {text:?} does not start with an attribute"
        )));
    };
    let mut path = AttrPath::parse(&word).map_err(as_path_error)?;
    if parser.peek() == Some(&Token::OpenBracket) {
        parser.next();
        let inner = parser.or().map_err(as_path_error)?;
        parser.expect(Token::CloseBracket).map_err(as_path_error)?;
        path.filter = Some(Box::new(inner));
        if let Some(Token::Word(next)) = parser.peek().cloned() {
            let Some(sub) = next.strip_prefix('.') else {
                return Err(ScimError::invalid_path(format!(
                    "unexpected {next:?} in path {text:?}"
                )));
            };
            path.sub = Some(AttrPath::parse(sub).map_err(as_path_error)?.attr);
            parser.next();
        }
    }
    if let Some(extra) = parser.peek() {
        return Err(ScimError::invalid_path(format!(
            "unexpected {} in path {text:?}",
            extra.describe()
        )));
    }
    Ok(path)
}

impl Filter {
    /// Parses a filter; anything malformed or unsupported is 400 invalidFilter.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        if text.len() > MAX_FILTER_LEN {
            return Err(ScimError::invalid_filter(format!(
                "filters are limited to {MAX_FILTER_LEN} bytes"
            )));
        }
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            position: 0,
            depth: 0,
        };
        let filter = parser.or()?;
        if let Some(extra) = parser.peek() {
            return Err(ScimError::invalid_filter(format!(
                "unexpected {} after a complete filter",
                extra.describe()
            )));
        }
        Ok(filter)
    }

    /// Whether a resource (its SCIM JSON) meets the filter.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(inner) => !inner.matches(resource),
            Filter::Present(path) => values_at(resource, path).iter().any(|v| present(v)),
            Filter::Compare(path, CompareOp::Ne, value) => !values_at(resource, path)
                .iter()
                .any(|v| compare(v, CompareOp::Eq, value, path.case_exact())),
            Filter::Compare(path, op, value) => values_at(resource, path)
                .iter()
                .any(|v| compare(v, *op, value, path.case_exact())),
            Filter::ValuePath(path, inner) => {
                let base = base_of(resource, path);
                match get_ci(base, &path.attr) {
                    Some(Value::Array(items)) => items.iter().any(|item| inner.matches(item)),
                    Some(item @ Value::Object(_)) => inner.matches(item),
                    _ => false,
                }
            }
        }
    }

    /// The index lookup this filter amounts to, if it is a single equality on an
    /// indexed attribute; `name_attr` is `userName` for users, `displayName` for groups.
    pub fn lookup(&self, name_attr: &str) -> Option<Lookup> {
        match self {
            Filter::Compare(path, CompareOp::Eq, CompValue::Str(value)) => {
                if path.is("id", None) {
                    Some(Lookup::Id(value.clone()))
                } else if path.is(name_attr, None) {
                    Some(Lookup::Name(value.clone()))
                } else if path.is("externalId", None) {
                    Some(Lookup::ExternalId(value.clone()))
                } else if path.is("members", Some("value")) {
                    Some(Lookup::Member(value.clone()))
                } else {
                    None
                }
            }
            Filter::ValuePath(path, inner) if path.is("members", None) => match inner.as_ref() {
                Filter::Compare(sub, CompareOp::Eq, CompValue::Str(value))
                    if sub.is("value", None) =>
                {
                    Some(Lookup::Member(value.clone()))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// The object an attribute path is read from: the resource, or its extension.
pub(crate) fn base_of<'a>(resource: &'a Value, path: &AttrPath) -> &'a Value {
    match &path.urn {
        Some(urn) if !is_core_urn(urn) => get_ci(resource, urn).unwrap_or(&Value::Null),
        _ => resource,
    }
}

/// A key of an object, ignoring case (SCIM attribute names are case-insensitive).
pub fn get_ci<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn values_at<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let base = base_of(resource, path);
    let Some(value) = get_ci(base, &path.attr) else {
        return Vec::new();
    };
    let mut items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    if let Some(filter) = &path.filter {
        items.retain(|item| filter.matches(item));
    }
    match &path.sub {
        Some(sub) => items
            .into_iter()
            .filter_map(|item| get_ci(item, sub))
            .collect(),
        // A multi-valued complex attribute compares through its "value".
        None => items
            .into_iter()
            .map(|item| get_ci(item, "value").unwrap_or(item))
            .collect(),
    }
}

fn present(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => true,
    }
}

fn compare(actual: &Value, op: CompareOp, expected: &CompValue, case_exact: bool) -> bool {
    use CompareOp::*;
    match expected {
        CompValue::Null => matches!(op, Eq) && actual.is_null(),
        CompValue::Bool(b) => {
            let actual = match actual {
                Value::Bool(v) => Some(*v),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            };
            matches!(op, Eq) && actual == Some(*b)
        }
        CompValue::Num(n) => {
            let Some(actual) = actual
                .as_f64()
                .or_else(|| actual.as_str().and_then(|s| s.parse().ok()))
            else {
                return false;
            };
            match op {
                Eq => actual == *n,
                Gt => actual > *n,
                Ge => actual >= *n,
                Lt => actual < *n,
                Le => actual <= *n,
                Ne | Co | Sw | Ew => false,
            }
        }
        CompValue::Str(expected) => {
            let actual = match actual {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return false,
            };
            let (a, e) = if case_exact {
                (actual, expected.clone())
            } else {
                (actual.to_lowercase(), expected.to_lowercase())
            };
            match op {
                Eq => a == e,
                Ne => a != e,
                Co => a.contains(&e),
                Sw => a.starts_with(&e),
                Ew => a.ends_with(&e),
                Gt => a > e,
                Ge => a >= e,
                Lt => a < e,
                Le => a <= e,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Str(String),
    Word(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::OpenBracket => "'['".into(),
            Token::CloseBracket => "']'".into(),
            Token::Str(s) => format!("string {s:?}"),
            Token::Word(w) => format!("{w:?}"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ScimError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '[' => {
                chars.next();
                tokens.push(Token::OpenBracket);
            }
            ']' => {
                chars.next();
                tokens.push(Token::CloseBracket);
            }
            '"' => {
                chars.next();
                tokens.push(Token::Str(string(&mut chars)?));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// A JSON-style string body after its opening quote.
fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, ScimError> {
    let mut out = String::new();
    loop {
        let Some(c) = chars.next() else {
            return Err(ScimError::invalid_filter(
                "a string is not closed with '\"'",
            ));
        };
        match c {
            '"' => return Ok(out),
            '\\' => {
                let escaped = chars
                    .next()
                    .ok_or_else(|| ScimError::invalid_filter("a string ends in '\\'"))?;
                match escaped {
                    '"' | '\\' | '/' => out.push(escaped),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        let code = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        out.push(code.ok_or_else(|| {
                            ScimError::invalid_filter(format!("\\u{hex} is not a character"))
                        })?);
                    }
                    other => {
                        return Err(ScimError::invalid_filter(format!(
                            "unknown escape \\{other}"
                        )));
                    }
                }
            }
            other => out.push(other),
        }
    }
}

/// A bare word as a number, if it is one as JSON writes numbers. Rust also
/// reads `NaN`, `inf` and `infinity` (in any case) as numbers, but to a SCIM
/// client they are words: `userName eq nan` looks for the user "nan".
fn json_number(word: &str) -> Option<f64> {
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let unsigned = word.strip_prefix('-').unwrap_or(word);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (mantissa, None),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    if !digits(integer) || !fraction.is_none_or(digits) || !exponent_ok {
        return None;
    }
    // `1e400` is a JSON number too large for a double: it compares as a word.
    word.parse::<f64>().ok().filter(|n| n.is_finite())
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, wanted: Token) -> Result<(), ScimError> {
        match self.next() {
            Some(token) if token == wanted => Ok(()),
            Some(other) => Err(ScimError::invalid_filter(format!(
                "expected {}, found {}",
                wanted.describe(),
                other.describe()
            ))),
            None => Err(ScimError::invalid_filter(format!(
                "expected {} at the end of the filter",
                wanted.describe()
            ))),
        }
    }

    fn deeper(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ScimError::invalid_filter(format!(
                "filters may nest at most {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, ScimError> {
        if self.keyword("not") {
            self.next();
            self.deeper()?;
            self.expect(Token::Open)?;
            let inner = self.or()?;
            self.expect(Token::Close)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Filter, ScimError> {
        match self.next() {
            Some(Token::Open) => {
                self.deeper()?;
                let inner = self.or()?;
                self.expect(Token::Close)?;
                self.depth -= 1;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                let mut path = AttrPath::parse(&word)?;
                if self.peek() == Some(&Token::OpenBracket) {
                    self.next();
                    self.deeper()?;
                    let inner = self.or()?;
                    self.expect(Token::CloseBracket)?;
                    self.depth -= 1;
                    // `emails[type eq "work"].value eq "x"`: a sub-attribute after the value filter.
                    if let Some(Token::Word(next)) = self.peek()
                        && let Some(sub) = next.strip_prefix('.')
                    {
                        let sub = AttrPath::parse(sub)?.attr;
                        self.next();
                        path.filter = Some(Box::new(inner));
                        path.sub = Some(sub);
                        return self.comparison(path);
                    }
                    return Ok(Filter::ValuePath(path, Box::new(inner)));
                }
                self.comparison(path)
            }
            Some(other) => Err(ScimError::invalid_filter(format!(
                "expected an attribute, found {}",
                other.describe()
            ))),
            None => Err(ScimError::invalid_filter(
                "the filter is empty or ends too early",
            )),
        }
    }

    fn comparison(&mut self, path: AttrPath) -> Result<Filter, ScimError> {
        let op = match self.next() {
            Some(Token::Word(op)) => op.to_ascii_lowercase(),
            Some(other) => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an operator after {}, found {}",
                    path.attr,
                    other.describe()
                )));
            }
            None => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an operator after {}",
                    path.attr
                )));
            }
        };
        let op = match op.as_str() {
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
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "unknown operator {other:?}; use eq, ne, co, sw, ew, gt, ge, lt, le or pr"
                )));
            }
        };
        let value = match self.next() {
            Some(Token::Str(s)) => CompValue::Str(s),
            Some(Token::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => CompValue::Bool(true),
                "false" => CompValue::Bool(false),
                "null" => CompValue::Null,
                // Entra ID sends unquoted values such as `externalId eq jyoung`.
                _ => json_number(&w).map_or(CompValue::Str(w), CompValue::Num),
            },
            Some(other) => {
                return Err(ScimError::invalid_filter(format!(
                    "expected a value, found {}",
                    other.describe()
                )));
            }
            None => {
                return Err(ScimError::invalid_filter(
                    "expected a value at the end of the filter",
                ));
            }
        };
        if matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew)
            && !matches!(value, CompValue::Str(_))
        {
            return Err(ScimError::invalid_filter(
                "co, sw and ew compare with a string",
            ));
        }
        Ok(Filter::Compare(path, op, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "schemas": [crate::USER_SCHEMA, crate::ENTERPRISE_USER],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "jYoung",
            "userName": "Jane.Young@Example.com",
            "name": {"givenName": "Jane", "familyName": "Young"},
            "displayName": "Jane Young",
            "active": true,
            "emails": [{"value": "jane@example.com", "type": "work", "primary": true}, {"value": "jy@home.example", "type": "home"}],
            "meta": {"lastModified": "2026-05-13T04:42:34Z", "resourceType": "User"},
            crate::ENTERPRISE_USER: {"employeeNumber": "701984", "manager": {"value": "26118915"}},
        })
    }

    fn check(filter: &str, expected: bool) {
        let parsed =
            Filter::parse(filter).unwrap_or_else(|e| panic!("{filter:?} does not parse: {e}"));
        assert_eq!(parsed.matches(&user()), expected, "{filter}");
    }

    #[test]
    fn rfc7644_3_4_2_2_operators() {
        check(r#"userName eq "jane.young@example.com""#, true);
        check(r#"USERNAME EQ "Jane.Young@Example.com""#, true);
        check(r#"userName ne "someone@else""#, true);
        check(r#"userName co "young""#, true);
        check(r#"userName sw "jane""#, true);
        check(r#"userName ew "example.com""#, true);
        check(r#"userName sw "young""#, false);
        check(r#"meta.lastModified gt "2026-01-01T00:00:00Z""#, true);
        check(r#"meta.lastModified lt "2026-01-01T00:00:00Z""#, false);
        check(r#"meta.lastModified ge "2026-05-13T04:42:34Z""#, true);
        check(r#"meta.lastModified le "2026-05-13T04:42:33Z""#, false);
        check("title pr", false);
        check("name.givenName pr", true);
        check("active eq true", true);
        check("active eq false", false);
        check(r#"externalId eq "jyoung""#, false);
        check(r#"externalId eq "jYoung""#, true);
    }

    #[test]
    fn rfc7644_3_4_2_2_precedence_and_grouping() {
        check(
            r#"userName eq "x" or active eq true and displayName eq "Jane Young""#,
            true,
        );
        check(
            r#"(userName eq "x" or active eq true) and displayName eq "nobody""#,
            false,
        );
        check(r#"not (userName eq "x")"#, true);
        check(r#"not (active eq true) or userName sw "j""#, true);
        let parsed = Filter::parse(r#"a eq "1" or b eq "2" and c eq "3""#).expect("parses");
        assert!(
            matches!(parsed, Filter::Or(_, _)),
            "and binds tighter than or: {parsed:?}"
        );
    }

    #[test]
    fn rfc7644_3_4_2_2_value_paths_and_urns() {
        check(r#"emails[type eq "work" and value co "example.com"]"#, true);
        check(r#"emails[type eq "other"]"#, false);
        check(r#"emails eq "jy@home.example""#, true);
        check(r#"emails.type eq "home""#, true);
        check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
            true,
        );
        check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#,
            true,
        );
        check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
            true,
        );
    }

    #[test]
    fn entra_value_path_with_sub_attribute() {
        check(
            r#"emails[type eq "work"].value eq "jane@example.com""#,
            true,
        );
        check(
            r#"emails[type eq "home"].value eq "jane@example.com""#,
            false,
        );
    }

    #[test]
    fn entra_unquoted_values() {
        check("externalId eq jYoung", true);
        check("externalId eq someoneElse", false);
    }

    #[test]
    fn string_escapes() {
        let parsed =
            Filter::parse(r#"displayName eq "Jane \"JY\" Young\u00e9\\""#).expect("parses");
        match parsed {
            Filter::Compare(_, _, CompValue::Str(s)) => assert_eq!(s, "Jane \"JY\" Youngé\\"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lookups_for_the_index() {
        let lookup = |f: &str| Filter::parse(f).expect("parses").lookup("userName");
        assert_eq!(
            lookup(r#"userName eq "a@b""#),
            Some(Lookup::Name("a@b".into()))
        );
        assert_eq!(
            lookup(r#"externalId eq "x""#),
            Some(Lookup::ExternalId("x".into()))
        );
        assert_eq!(lookup(r#"id eq "x""#), Some(Lookup::Id("x".into())));
        assert_eq!(
            lookup(r#"members.value eq "m""#),
            Some(Lookup::Member("m".into()))
        );
        assert_eq!(
            lookup(r#"members[value eq "m"]"#),
            Some(Lookup::Member("m".into()))
        );
        assert_eq!(lookup(r#"userName sw "a""#), None);
        assert_eq!(lookup(r#"userName eq "a" and active eq true"#), None);
    }

    #[test]
    fn bad_filters_are_invalid_filter() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName zz "x""#,
            r#"userName eq "open"#,
            "(userName pr",
            "userName pr)",
            r#"emails[type eq "work""#,
            r#"not userName eq "x""#,
            r#"1abc eq "x""#,
            r#"userName co true"#,
            "and",
            r#"a eq "1" or"#,
            r#"displayName eq "\q""#,
        ] {
            let error = Filter::parse(bad).expect_err(bad);
            assert_eq!(error.status, 400, "{bad}");
            assert_eq!(
                error.scim_type,
                Some(crate::ScimType::InvalidFilter),
                "{bad}"
            );
        }
        let deep = format!("{}userName pr{}", "(".repeat(60), ")".repeat(60));
        assert!(Filter::parse(&deep).is_err());
        assert!(Filter::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn bare_words_are_numbers_only_as_json_writes_them() {
        let value = |text: &str| match Filter::parse(&format!("userName eq {text}")) {
            Ok(Filter::Compare(_, _, value)) => value,
            other => panic!("{text}: {other:?}"),
        };
        for number in ["0", "-1", "1.5", "2e3", "2E-3", "-0.25e+2"] {
            assert!(matches!(value(number), CompValue::Num(_)), "{number}");
        }
        // Found by the fuzz targets: these read as NaN or infinity, matching nothing.
        for word in [
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "1e400",
            "1.",
            ".5",
            "+1",
            "1e",
            "0x10",
        ] {
            assert_eq!(value(word), CompValue::Str(word.to_owned()), "{word}");
        }
        check("userName eq nan", false);
        let nan = json!({"userName": "nan"});
        assert!(
            Filter::parse("userName eq nan")
                .expect("parses")
                .matches(&nan)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,200}") {
            if let Ok(filter) = Filter::parse(&input) {
                let _ = filter.matches(&user());
            }
        }

        #[test]
        fn filter_shaped_input_never_panics(input in r#"[a-zA-Z.:\[\]()" 0-9\\]{0,120}"#) {
            if let Ok(filter) = Filter::parse(&input) {
                let _ = filter.matches(&user());
            }
        }
    }
}
