//! Property tests: no input makes the parsers panic or take long, and what
//! the library writes it reads back the same.

use std::time::{Duration, Instant};

use entitle_scim::{
    Filter, PatchPath, PatchRequest, ResourceKind, apply_patch, normalize_group, normalize_user,
    project,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Fragments real filters are made of, so random mixes reach deep into the parser.
fn filter_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("userName".to_owned()),
        Just("emails".to_owned()),
        Just("name.givenName".to_owned()),
        Just("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value".to_owned()),
        Just(" eq ".to_owned()),
        Just(" co ".to_owned()),
        Just(" pr".to_owned()),
        Just(" and ".to_owned()),
        Just(" or ".to_owned()),
        Just("not ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(".value".to_owned()),
        Just("\"x\\\"y\"".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("true".to_owned()),
        Just("12.5e3".to_owned()),
        "[ -~]{0,6}",
        "\\PC{0,3}",
    ]
}

fn filter_like() -> impl Strategy<Value = String> {
    prop::collection::vec(filter_fragment(), 0..40).prop_map(|parts| parts.concat())
}

/// Runs `work`, failing if it takes longer than a generous bound for an
/// unoptimised build on a busy machine; a super-linear parser would blow it.
fn fast<T>(work: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = work();
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "took {:?}",
        start.elapsed()
    );
    out
}

fn sample_user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": "u1", "userName": "a", "active": true,
        "emails": [{"value": "a@x", "type": "work", "primary": true}],
        "meta": {"resourceType": "User"}
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn filter_parse_never_panics(text in "\\PC{0,200}") {
        let _ = fast(|| Filter::parse(&text));
    }

    #[test]
    fn filter_parse_and_match_on_filter_like_text(text in filter_like()) {
        if let Ok(filter) = fast(|| Filter::parse(&text)) {
            fast(|| filter.matches(&sample_user()));
            let _ = filter.simple_eq();
        }
    }

    #[test]
    fn patch_path_parse_never_panics(text in prop_oneof!["\\PC{0,200}".boxed(), filter_like().boxed()]) {
        let _ = fast(|| PatchPath::parse(&text));
    }

    #[test]
    fn patch_with_arbitrary_paths_never_panics(path in filter_like(), op in "(?i)(add|remove|replace)", value in prop_oneof![
        Just(json!("v")), Just(json!(true)), Just(json!(null)), Just(json!([{"value": "x"}])), Just(json!({"value": "y", "primary": "True"}))
    ]) {
        let body = json!({"Operations": [{"op": op, "path": path, "value": value}]});
        if let Ok(request) = PatchRequest::from_json(&body) {
            let mut user = sample_user();
            let _ = fast(|| apply_patch(&mut user, ResourceKind::User, &request));
        }
    }

    #[test]
    fn quoted_values_round_trip(value in "\\PC{0,40}") {
        let quoted = serde_json::to_string(&value).unwrap_or_default();
        let filter = Filter::parse(&format!("externalId eq {quoted}"));
        prop_assert_eq!(
            filter.ok().and_then(|f| f.simple_eq()).map(|(_, v)| v),
            Some(value.clone())
        );
        let doc = json!({"externalId": value});
        let filter = Filter::parse(&format!("externalId eq {quoted}"));
        prop_assert!(filter.is_ok_and(|f| f.matches(&doc)));
    }

    #[test]
    fn normalize_is_idempotent(user_name in "[a-zA-Z0-9@.]{1,20}", given in "\\PC{0,10}", active in any::<bool>(), title in prop::option::of("\\PC{0,10}")) {
        let input = json!({"userName": user_name, "name": {"givenName": given}, "active": active.to_string(), "title": title, "password": "p"});
        let once = normalize_user(&input);
        prop_assert!(once.is_ok());
        let once = once.unwrap_or_default();
        prop_assert_eq!(normalize_user(&once).ok(), Some(once.clone()));
        prop_assert!(once.get("password").is_none());
        prop_assert_eq!(&once["active"], &json!(active));
    }

    #[test]
    fn group_members_round_trip(ids in prop::collection::vec("[a-z0-9-]{1,12}", 0..20)) {
        let members: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
        let group = normalize_group(&json!({"displayName": "g", "members": members}));
        prop_assert!(group.is_ok());
        let group = group.unwrap_or_default();
        let mut unique = Vec::new();
        for id in &ids {
            if !unique.contains(id) {
                unique.push(id.clone());
            }
        }
        prop_assert_eq!(entitle_scim::member_ids(&group), unique);
    }

    #[test]
    fn projection_never_panics_and_keeps_id(attrs in filter_like(), excluded in filter_like()) {
        let out = project(&sample_user(), Some(&attrs), Some(&excluded));
        prop_assert_eq!(&out["id"], &json!("u1"));
    }
}

#[test]
fn worst_case_inputs_finish_fast() {
    let cases = [
        "(".repeat(4000),
        "not (".repeat(800),
        "[".repeat(4000),
        "\"".repeat(4000),
        "a".repeat(4096),
        "a pr and ".repeat(450),
        "emails[type eq \"x\"] or ".repeat(170),
        format!("userName eq \"{}\"", "\\\"".repeat(2000)),
        format!("userName eq \"{}", "\\u00e9".repeat(600)),
    ];
    for text in &cases {
        let _ = fast(|| Filter::parse(text));
        let _ = fast(|| PatchPath::parse(text));
    }
    let chain = "title pr and ".repeat(300) + "title pr";
    let filter = Filter::parse(&chain).unwrap_or_else(|e| panic!("{e:?}"));
    fast(|| filter.matches(&sample_user()));
}

/// A value for a declared attribute, the way a conformance checker fills
/// one from `/Schemas`: canonical values when listed, else by type.
fn sample_for(attribute: &Value, n: usize) -> Value {
    let one = match attribute["type"].as_str() {
        Some("complex") => {
            let mut object = serde_json::Map::new();
            for sub in attribute["subAttributes"].as_array().into_iter().flatten() {
                if let Some(name) = sub["name"].as_str() {
                    object.insert(name.to_owned(), sample_for(sub, n));
                }
            }
            Value::Object(object)
        }
        Some("boolean") => json!(n.is_multiple_of(2)),
        Some("reference") => json!(format!("https://{n}.example/x")),
        _ => match attribute["canonicalValues"].get(n % 2) {
            Some(canonical) => canonical.clone(),
            None => json!(format!(
                "v{n}-{}",
                attribute["name"].as_str().unwrap_or_default()
            )),
        },
    };
    if attribute["multiValued"] == json!(true) {
        json!([one])
    } else {
        one
    }
}

#[test]
fn every_declared_writable_attribute_round_trips() {
    let base = "https://h/scim/v2/t";
    for (kind, core, extensions) in [
        (
            ResourceKind::User,
            entitle_scim::USER_SCHEMA,
            vec![entitle_scim::ENTERPRISE_USER_SCHEMA],
        ),
        (ResourceKind::Group, entitle_scim::GROUP_SCHEMA, vec![]),
    ] {
        for n in 0..2 {
            let mut body = serde_json::Map::new();
            let fill = |schema: &Value, into: &mut serde_json::Map<String, Value>| {
                for attribute in schema["attributes"].as_array().into_iter().flatten() {
                    if attribute["mutability"] != json!("readOnly")
                        && let Some(name) = attribute["name"].as_str()
                    {
                        into.insert(name.to_owned(), sample_for(attribute, n));
                    }
                }
            };
            let core_schema = entitle_scim::schema_by_id(core, base).unwrap_or_default();
            fill(&core_schema, &mut body);
            let mut schemas = vec![json!(core)];
            for urn in &extensions {
                let mut inner = serde_json::Map::new();
                fill(
                    &entitle_scim::schema_by_id(urn, base).unwrap_or_default(),
                    &mut inner,
                );
                body.insert((*urn).to_owned(), Value::Object(inner));
                schemas.push(json!(urn));
            }
            body.insert("schemas".to_owned(), Value::Array(schemas));
            let body = Value::Object(body);
            let stored = entitle_scim::normalize(kind, &body);
            assert_eq!(
                stored.as_ref().ok(),
                Some(&body),
                "{kind:?} {n}: {stored:?}"
            );
        }
    }
}
