//! Fuzz targets for what a SCIM client controls: the filter language (parser
//! and evaluator) and PATCH (parser and engine). `cargo fuzz` needs a nightly
//! compiler, so these are proptest properties that run in CI like any test.
//!
//! Every target must never panic, never overflow the stack, and answer bad
//! input with a SCIM error (400 with a `scimType`). Tests whose names start
//! with `filter_` form the filter target, `patch_` the PATCH target. The
//! default number of cases keeps each under a few seconds in CI; a longer run
//! raises it, e.g. `PROPTEST_CASES=100000 cargo test -p entitle-scim-protocol
//! --test fuzz filter_`.

use entitle_scim_protocol::{
    ENTERPRISE_USER, Filter, GROUP_SCHEMA, PatchRequest, ScimError, ScimType, USER_SCHEMA,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Number, Value, json};

// ---------------------------------------------------------------------------
// Resources the filters are evaluated against and the PATCHes applied to.

fn user() -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_USER],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "jYoung",
        "userName": "Barbara.Jensen@example.com",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "meta": {"resourceType": "User", "version": "W/\"3\"", "lastModified": "2011-05-13T04:42:34Z"},
        ENTERPRISE_USER: {"department": "Tour Operations", "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}}
    })
}

fn group() -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
        "displayName": "Tour Guides",
        "members": [
            {"value": "2819c223-7f76-453a-919d-413861904646", "display": "Babs"},
            {"value": "902c246b-6245-4190-8e05-00816be7344a", "type": "Group"}
        ],
        "meta": {"resourceType": "Group", "version": "W/\"7\""}
    })
}

/// A known resource, or any JSON at all (a resource is whatever the store renders).
fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(user()),
        3 => Just(group()),
        1 => json_value(),
        1 => (json_value(), any::<bool>()).prop_map(|(extra, is_user)| {
            let mut base = if is_user { user() } else { group() };
            if let (Value::Object(base), Value::Object(extra)) = (&mut base, extra) {
                base.extend(extra);
            }
            base
        }),
    ]
}

// ---------------------------------------------------------------------------
// Building blocks: attribute paths, values, keys and arbitrary JSON.

const URN_USER_NAME: &str = "urn:ietf:params:scim:schemas:core:2.0:User:userName";
const URN_USER_ID: &str = "urn:ietf:params:scim:schemas:core:2.0:User:id";
const URN_MANAGER: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value";
const URN_DEPARTMENT: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";

/// Attribute paths, real and broken.
fn attr_path() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "userName", "username", "name.givenName", "name.familyName", "emails", "emails.value",
            "emails.type", "members", "members.value", "Members.Value", "id", "ID", "externalId",
            "meta", "meta.version", "meta.lastModified", "schemas", "active", "displayName",
            "$ref", "addresses", URN_USER_NAME, URN_USER_ID, URN_MANAGER, URN_DEPARTMENT,
            ENTERPRISE_USER, "urn:", "urn:x", "urn:x:", "urn::", "a.b.c", ".value", "1abc",
            "üser", "a..b", "emails.", "-a", "$", "_",
        ])
        .prop_map(str::to_owned),
        2 => "[a-zA-Z$][a-zA-Z0-9_$-]{0,8}(\\.[a-zA-Z$][a-zA-Z0-9_$-]{0,6})?",
        1 => "urn:[a-z:0-9.]{0,30}:[a-zA-Z]{1,8}(\\.[a-z]{1,5})?",
        1 => "\\PC{0,10}",
    ]
}

/// The right-hand side of a comparison, as written in a filter.
fn filter_value() -> impl Strategy<Value = String> {
    prop_oneof![
        // Quoted strings with valid and invalid escapes, sometimes unclosed.
        3 => (
            r#"([^"\\]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}|\\u[0-9a-fA-F+-]{0,4}|\\.){0,12}"#,
            any::<bool>()
        )
            .prop_map(|(body, closed)| {
                if closed { format!("\"{body}\"") } else { format!("\"{body}") }
            }),
        1 => "-?[0-9]{1,6}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,4})?",
        1 => any::<f64>().prop_map(|n| n.to_string()),
        1 => select(vec![
            "true", "false", "null", "TRUE", "Null", "inf", "-inf", "NaN", "infinity", "1e400",
            "-0", "jyoung", "W/\"3\"", "\"\"",
        ])
        .prop_map(str::to_owned),
        1 => "[^ ()\\[\\]\"]{1,10}",
    ]
}

fn operator() -> impl Strategy<Value = &'static str> {
    select(vec![
        "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "EQ", "Pr", "Co", "sW",
    ])
}

/// One lexical piece of a filter.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => attr_path(),
        3 => operator().prop_map(str::to_owned),
        3 => filter_value(),
        2 => select(vec!["and", "or", "not", "AND", "Or", "NOT", "not("]).prop_map(str::to_owned),
        3 => select(vec!["(", ")", "[", "]", "\"", "\\", ".", "].", "])", "((", "))", "[[", "]]"])
            .prop_map(str::to_owned),
        1 => select(vec![" ", "\t", "\n", "\u{a0}", "\u{2028}", "\0", "\u{feff}"]).prop_map(str::to_owned),
    ]
}

/// Token soup: pieces of the grammar in any order, spaced or not.
fn filter_shaped() -> impl Strategy<Value = String> {
    (proptest::collection::vec(token(), 0..40), any::<bool>())
        .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
}

/// Filters that follow the grammar (most parse), nested up to the limit and past it.
fn grammatical_filter() -> impl Strategy<Value = String> {
    let comparison = (attr_path(), operator(), filter_value()).prop_map(|(path, op, value)| {
        if op.eq_ignore_ascii_case("pr") {
            format!("{path} {op}")
        } else {
            format!("{path} {op} {value}")
        }
    });
    comparison.prop_recursive(12, 96, 4, |inner| {
        prop_oneof![
            (
                inner.clone(),
                select(vec!["and", "or", "AND", "oR"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|f| format!("({f})")),
            inner.clone().prop_map(|f| format!("not ({f})")),
            (
                select(vec!["emails", "members", "addresses", URN_MANAGER]),
                inner.clone()
            )
                .prop_map(|(attr, f)| format!("{attr}[{f}]")),
            (
                select(vec!["emails", "members"]),
                inner,
                select(vec!["value", "type", "display"]),
                operator(),
                filter_value()
            )
                .prop_map(|(attr, f, sub, op, value)| format!("{attr}[{f}].{sub} {op} {value}")),
        ]
    })
}

/// Object keys: SCIM's own words and anything else.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "Operations", "operations", "op", "OP", "path", "Path", "value", "VALUE", "schemas",
            "id", "Id", "meta", "members", "emails", "userName", "active", "name", "givenName",
            "type", "primary", "display", "displayName", "externalId", "department", "manager",
            "name.givenName", ENTERPRISE_USER, URN_USER_NAME, URN_USER_ID, URN_DEPARTMENT,
            "urn:x:y", "$ref", "",
        ])
        .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|n| Number::from_f64(n).map_or(Value::Null, Value::Number)),
        key().prop_map(Value::String),
        filter_value().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

// ---------------------------------------------------------------------------
// What every target checks.

/// A refusal is a 400 with a SCIM error type, never anything else.
fn assert_scim_400(error: &ScimError, expected: &[ScimType], input: &str) {
    assert_eq!(error.status, 400, "{error} for {input:?}");
    let Some(kind) = error.scim_type else {
        panic!("no scimType in {error} for {input:?}");
    };
    assert!(
        expected.contains(&kind),
        "{kind:?} is not one of {expected:?} for {input:?}"
    );
    // The body a client receives is well formed.
    let body = error.to_json();
    assert_eq!(body["status"], "400");
}

/// Parses a filter and, if it parses, evaluates it against every kind of resource.
fn check_filter(text: &str, resources: &[Value]) -> Option<Filter> {
    match Filter::parse(text) {
        Ok(filter) => {
            for resource in resources {
                let _ = filter.matches(resource);
            }
            let _ = filter.lookup("userName");
            let _ = filter.lookup("displayName");
            Some(filter)
        }
        Err(error) => {
            assert_scim_400(&error, &[ScimType::InvalidFilter], text);
            None
        }
    }
}

/// Parses a PATCH body and, if it parses, applies it; checks what a PATCH
/// must never do whatever it says.
fn check_patch(body: &Value, resource: &Value) {
    let shown = body.to_string();
    let request = match PatchRequest::from_json(body) {
        Ok(request) => request,
        Err(error) => {
            assert_scim_400(
                &error,
                &[
                    ScimType::InvalidSyntax,
                    ScimType::InvalidPath,
                    ScimType::InvalidFilter,
                ],
                &shown,
            );
            return;
        }
    };
    let mut patched = resource.clone();
    match request.apply(&mut patched) {
        Ok(()) => {
            let Some(before) = resource.as_object() else {
                return;
            };
            let Some(after) = patched.as_object() else {
                panic!("{shown} turned the resource into {patched}");
            };
            // Read-only attributes are read-only by every path, URN-qualified or not.
            for read_only in ["id", "meta", "schemas"] {
                assert_eq!(
                    before.get(read_only),
                    after.get(read_only),
                    "{shown} changed {read_only}"
                );
            }
        }
        Err(error) => assert_scim_400(
            &error,
            &[
                ScimType::InvalidSyntax,
                ScimType::InvalidPath,
                ScimType::InvalidFilter,
                ScimType::InvalidValue,
                ScimType::NoTarget,
                ScimType::Mutability,
            ],
            &shown,
        ),
    }
}

fn resources() -> [Value; 4] {
    [
        user(),
        group(),
        json!(null),
        json!({"emails": "x", "members": [1, null, [], {}]}),
    ]
}

/// A PATCH operation made of SCIM's words, with paths from the filter grammar.
fn operation() -> impl Strategy<Value = Value> {
    let op = select(vec![
        "add", "Add", "replace", "REPLACE", "remove", "Remove", "move", "",
    ]);
    let path = prop_oneof![
        3 => attr_path().prop_map(Some),
        2 => (
            select(vec!["emails", "members", "addresses", "Emails", URN_MANAGER, "id"]),
            grammatical_filter(),
            proptest::option::of(select(vec!["value", "type", "display", "primary", "x.y"]))
        )
            .prop_map(|(attr, f, sub)| Some(match sub {
                Some(sub) => format!("{attr}[{f}].{sub}"),
                None => format!("{attr}[{f}]"),
            })),
        1 => filter_shaped().prop_map(Some),
        1 => Just(None),
    ];
    (op, path, proptest::option::of(json_value()), json_value()).prop_map(
        |(op, path, value, extra)| {
            let mut operation = Map::new();
            operation.insert("op".to_owned(), Value::String(op.to_owned()));
            if let Some(path) = path {
                operation.insert("path".to_owned(), Value::String(path));
            }
            if let Some(value) = value {
                operation.insert("value".to_owned(), value);
            }
            // Now and then a stray member, or the whole operation replaced by junk.
            match extra {
                Value::Object(more) => {
                    operation.extend(more);
                    Value::Object(operation)
                }
                Value::Null => extra,
                _ => Value::Object(operation),
            }
        },
    )
}

proptest! {
    // ---- The filter target ------------------------------------------------

    #[test]
    fn filter_arbitrary_text(text in ".{0,300}") {
        check_filter(&text, &resources());
    }

    #[test]
    fn filter_token_soup(text in filter_shaped()) {
        check_filter(&text, &resources());
    }

    #[test]
    fn filter_grammatical_and_its_negation_agree(text in grammatical_filter(), resource in resource()) {
        let resources = [resource];
        let Some(filter) = check_filter(&text, &resources) else {
            return Ok(());
        };
        // Parentheses change nothing, and `not` negates (within the nesting limit).
        if let Ok(grouped) = Filter::parse(&format!("({text})")) {
            prop_assert_eq!(&grouped, &filter);
        }
        if let Ok(negated) = Filter::parse(&format!("not ({text})")) {
            prop_assert_eq!(negated.matches(&resources[0]), !filter.matches(&resources[0]));
        }
    }

    #[test]
    fn filter_deep_nesting_and_long_input(
        opener in select(vec!["(", "not (", "not(", "emails[", "[", "a[", "((", "not (emails["]),
        closer in select(vec![")", "]", "", ")]"]),
        depth in prop_oneof![0usize..60, 0usize..12_000],
        chain in 0usize..1_200,
        joiner in select(vec![" and ", " or ", " AND ", "and"]),
    ) {
        let nested = format!(
            "{}userName pr{}",
            opener.repeat(depth),
            closer.repeat(depth)
        );
        check_filter(&nested, &resources());
        let chained = vec!["userName eq \"x\""; chain.max(1)].join(joiner);
        check_filter(&chained, &resources());
    }

    // ---- The PATCH target -------------------------------------------------

    #[test]
    fn patch_arbitrary_json(body in json_value(), resource in resource()) {
        check_patch(&body, &resource);
    }

    #[test]
    fn patch_arbitrary_text(text in "\\PC{0,300}", resource in resource()) {
        // What a server does with a body: JSON first (serde_json bounds its
        // nesting), then the PATCH message.
        if let Ok(body) = serde_json::from_str::<Value>(&text) {
            check_patch(&body, &resource);
        }
    }

    #[test]
    fn patch_operation_lists(
        operations in proptest::collection::vec(operation(), 0..8),
        key in select(vec!["Operations", "operations", "OPERATIONS", "ops"]),
        resource in resource(),
    ) {
        check_patch(&json!({"schemas": [entitle_scim_protocol::PATCH_SCHEMA], key: operations}), &resource);
    }

    #[test]
    fn patch_deeply_nested_paths(
        opener in select(vec!["emails[", "[", "emails[not (", "emails[("]),
        depth in prop_oneof![0usize..60, 0usize..6_000],
        op in select(vec!["add", "replace", "remove"]),
    ) {
        let path = format!("{}value pr{}", opener.repeat(depth), "]".repeat(depth));
        let body = json!({"Operations": [{"op": op, "path": path, "value": "x"}]});
        check_patch(&body, &user());
    }
}

// ---------------------------------------------------------------------------
// The extremes, always run.

#[test]
fn filter_ten_thousand_open_parentheses_are_refused() {
    for text in [
        "(".repeat(10_000),
        format!("{}userName pr{}", "(".repeat(10_000), ")".repeat(10_000)),
        "not (".repeat(10_000),
        "emails[".repeat(10_000),
        format!("{}userName pr", "(".repeat(4_000)),
        format!("{}userName pr", "not (".repeat(800)),
    ] {
        let error = Filter::parse(&text).expect_err("refused");
        assert_scim_400(&error, &[ScimType::InvalidFilter], "deep");
    }
}

#[test]
fn filter_the_longest_chain_accepted_is_evaluated_on_a_small_stack() {
    // The longest `or` chain within the length limit, and the deepest nesting
    // accepted, evaluated on a thread with a quarter of tokio's worker stack.
    let chain = vec!["userName pr"; 4096 / 15].join(" or ");
    let nested = format!("{}userName pr{}", "not (".repeat(50), ")".repeat(50));
    let run = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let chain = Filter::parse(&chain).expect("a chain within the limit");
            assert!(chain.matches(&user()));
            let nested = Filter::parse(&nested).expect("50 levels are accepted");
            assert!(nested.matches(&user()));
        })
        .expect("thread");
    assert!(run.join().is_ok());
}

#[test]
fn patch_read_only_attributes_are_refused_by_any_name() {
    for (path, value) in [
        (URN_USER_ID, json!("other")),
        ("urn:ietf:params:scim:schemas:core:2.0:User:meta", json!({})),
        (
            "urn:ietf:params:scim:schemas:core:2.0:Group:schemas",
            json!([]),
        ),
        ("ID", json!("other")),
    ] {
        for op in ["add", "replace", "remove"] {
            let body = json!({"Operations": [{"op": op, "path": path, "value": value}]});
            let request = PatchRequest::from_json(&body).expect("parses");
            let mut resource = user();
            let error = request.apply(&mut resource).expect_err("read-only");
            assert_eq!(error.scim_type, Some(ScimType::Mutability), "{op} {path}");
            assert_eq!(resource, user());
        }
    }
    // Without a path, a URN-qualified read-only key is ignored like a plain one.
    let body = json!({"Operations": [{"op": "replace", "value": {URN_USER_ID: "other", "displayName": "B"}}]});
    let mut resource = user();
    PatchRequest::from_json(&body)
        .expect("parses")
        .apply(&mut resource)
        .expect("applies");
    assert_eq!(resource["id"], user()["id"]);
    assert_eq!(resource["displayName"], "B");
}
