//! The OpenAPI document against the server it describes: every route of the
//! routers is in it, query parameters are optional query parameters, posture
//! values are typed, and real answers (successes and errors) of a
//! representative set of calls match the documented status and body schema.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{Database, ROOT, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

// ---------------------------------------------------------------- the document

/// The OpenAPI document served by a running server.
struct Doc(Value);

impl Doc {
    async fn fetch(app: &TestApp) -> Self {
        let answer = app
            .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        Doc(answer.body)
    }

    /// Checks that `status` is documented for the operation and that `body`
    /// matches the documented schema; panics with every mismatch.
    fn check(&self, method: &str, template: &str, status: StatusCode, body: &Value) {
        let operation = &self.0["paths"][template][method];
        assert!(
            operation.is_object(),
            "{method} {template} is not in the document"
        );
        let code = status.as_u16().to_string();
        let Some(response) = operation["responses"].get(&code) else {
            panic!("{method} {template} answered {code}, which is not documented: {body}");
        };
        let response = self.resolve(response);
        let schema = &response["content"]["application/json"]["schema"];
        if schema.is_null() {
            assert!(
                body.is_null(),
                "{method} {template} {code}: the document has no body but the server sent {body}"
            );
            assert!(
                status.as_u16() < 400,
                "{method} {template} {code}: an error status without the error body schema"
            );
            return;
        }
        let mut errors = Vec::new();
        self.validate(schema, body, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {template} {code}: the body does not match the document:\n  {}\nbody: {body}",
            errors.join("\n  ")
        );
    }

    /// Follows a `$ref` to `#/components/...`.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("only local references are used: {reference}"));
                let target = self
                    .0
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("{reference} names nothing in the document"));
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// A JSON Schema checker for the subset utoipa emits: `$ref`, `type` (one
    /// or a list, with `null`), `properties`, `required`, `additionalProperties`,
    /// `items`, `oneOf`, `anyOf`, `allOf`, `enum` and `minimum`. It is stricter
    /// than JSON Schema in one way, on purpose: an object schema that lists
    /// `properties` and says nothing of others refuses undocumented fields, so
    /// a field added to an answer but not to the document is drift.
    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        self.validate_part(schema, value, at, errors, true);
    }

    /// `closed` is false for the parts of an `allOf` (utoipa's rendering of
    /// `#[serde(flatten)]`), whose fields are checked together by the whole.
    fn validate_part(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
        closed: bool,
    ) {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| type_matches(t, value)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array)
            && !choices.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {choices:?}"));
        }
        if let (Some(minimum), Some(number)) = (
            schema.get("minimum").and_then(Value::as_f64),
            value.as_f64(),
        ) && number < minimum
        {
            errors.push(format!("{at}: {number} is below the minimum {minimum}"));
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for part in all {
                self.validate_part(part, value, at, errors, false);
            }
            let mut known = BTreeSet::new();
            if let Some(object) = value.as_object()
                && closed
                && self.property_names(schema, &mut known)
            {
                for name in object.keys().filter(|name| !known.contains(*name)) {
                    errors.push(format!(
                        "{at}/{name}: a field the document does not describe"
                    ));
                }
            }
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(choices) = schema.get(keyword).and_then(Value::as_array) {
                let matching = choices
                    .iter()
                    .filter(|choice| {
                        let mut inner = Vec::new();
                        self.validate(choice, value, at, &mut inner);
                        inner.is_empty()
                    })
                    .count();
                if matching == 0 || (exactly_one && matching > 1) {
                    errors.push(format!(
                        "{at}: {value} matches {matching} of the {keyword} choices"
                    ));
                }
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            let all_of = schema.get("allOf");
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !object.contains_key(name) {
                        errors.push(format!("{at}: the required field {name:?} is missing"));
                    }
                }
            }
            for (name, field) in object {
                let path = format!("{at}/{name}");
                match (
                    properties.and_then(|p| p.get(name)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(property), _) => self.validate(property, field, &path, errors),
                    (None, Some(Value::Bool(false))) => {
                        errors.push(format!("{path}: not allowed by the document"))
                    }
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(additional)) => self.validate(additional, field, &path, errors),
                    (None, None) if closed && properties.is_some() && all_of.is_none() => {
                        errors.push(format!("{path}: a field the document does not describe"))
                    }
                    (None, None) => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (index, item) in array.iter().enumerate() {
                self.validate(items, item, &format!("{at}/{index}"), errors);
            }
        }
    }

    /// Collects the fields a schema describes, through `allOf`; false when it
    /// allows others.
    fn property_names(&self, schema: &Value, names: &mut BTreeSet<String>) -> bool {
        let schema = self.resolve(schema);
        if schema.get("additionalProperties").is_some() {
            return false;
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            names.extend(properties.keys().cloned());
        }
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|part| self.property_names(part, names))
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|n| n.fract() == 0.0)
        }
        _ => false,
    }
}

// ---------------------------------------------------------------- the routers

/// Every `(method, path)` of the admin, enrollment, agent and operations
/// routers, read from their source so that a route added there without an
/// annotation fails this test.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // Every file of the admin module, so that a new resource module is read too.
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(src.join("admin"))
        .expect("the admin module")
        .map(|entry| entry.expect("an admin module file").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.extend(["enrollment.rs", "agent.rs", "ops.rs"].map(|file| src.join(file)));
    let mut routes = BTreeSet::new();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("router source");
        let mut rest = source.as_str();
        while let Some(start) = rest.find(".route(") {
            rest = &rest[start + ".route(".len()..];
            // The call's text up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a closed .route( call");
            let call = &rest[..end];
            let quoted: Vec<&str> = call.split('"').collect();
            let route = quoted.get(1).expect("a path literal").to_string();
            for method in ["get", "post", "put", "patch", "delete"] {
                let needle = format!("{method}(");
                let found = call.match_indices(&needle).any(|(i, _)| {
                    i == 0
                        || !call[..i]
                            .chars()
                            .next_back()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if found {
                    routes.insert((method.to_owned(), route.clone()));
                }
            }
        }
    }
    routes
}

async fn the_document_describes_every_route_and_types_posture(db: Database) {
    let app = TestApp::start(&db).await;
    let doc = Doc::fetch(&app).await;
    let in_source = routes_in_source();
    assert!(in_source.len() > 40, "the router parse found {in_source:?}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc.0["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            documented.insert((method.clone(), path.clone()));
            // Every parameter is where the handler reads it: path parameters
            // are in the template, everything else is an optional query
            // parameter or a header.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("name");
                match parameter["in"].as_str() {
                    Some("path") => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    ),
                    Some("query") | Some("header") => assert_ne!(
                        parameter["required"],
                        json!(true),
                        "{method} {path}: {name} is optional"
                    ),
                    other => panic!("{method} {path}: {name} is in {other:?}"),
                }
            }
            // Every operation that can fail documents the error body: ErrorJson,
            // or a schema that carries its `error` and adds to it (a stale
            // save's current settings).
            for (status, response) in operation["responses"].as_object().expect("responses") {
                if status.starts_with('4') {
                    let schema = &doc.resolve(response)["content"]["application/json"]["schema"];
                    if schema["$ref"] == "#/components/schemas/ErrorJson" {
                        continue;
                    }
                    let extended = doc.resolve(schema);
                    assert!(
                        extended["properties"]["error"]["$ref"]
                            == "#/components/schemas/ErrorDetailJson"
                            && extended["required"]
                                .as_array()
                                .is_some_and(|r| r.contains(&json!("error"))),
                        "{method} {path} {status}: {schema}"
                    );
                }
            }
        }
    }
    let missing: Vec<_> = in_source.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&in_source).collect();
    assert!(
        extra.is_empty(),
        "documented routes the server lacks: {extra:?}"
    );

    // Posture values are a boolean, a number or a string, not any object.
    let schemas = &doc.0["components"]["schemas"];
    for (schema, pointer) in [
        ("ReportJson", "/properties/posture/additionalProperties"),
        ("DeviceJson", "/properties/posture/additionalProperties"),
        ("PostureRuleJson", "/properties/value"),
    ] {
        let value = doc.resolve(
            schemas[schema]
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{schema}{pointer} is not described")),
        );
        let mut errors = Vec::new();
        for good in [json!(true), json!(3.5), json!("14.5")] {
            doc.validate(value, &good, pointer, &mut errors);
        }
        assert!(errors.is_empty(), "{schema}: {errors:?}");
        for bad in [json!(null), json!({}), json!([1])] {
            let mut errors = Vec::new();
            doc.validate(value, &bad, pointer, &mut errors);
            assert!(!errors.is_empty(), "{schema}{pointer} accepts {bad}");
        }
    }
}

// ---------------------------------------------------------------- real answers

/// Calls the server and checks the answer against the document; returns it.
struct Checked<'a> {
    app: &'a TestApp,
    doc: &'a Doc,
    calls: usize,
}

impl Checked<'_> {
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
        expected: StatusCode,
    ) -> common::Answer {
        let answer = self
            .app
            .call(method.clone(), path, token, body, headers)
            .await;
        assert_eq!(
            answer.status, expected,
            "{method} {path}: {:?}",
            answer.body
        );
        self.doc.check(
            &method.as_str().to_lowercase(),
            template,
            answer.status,
            &answer.body,
        );
        self.calls += 1;
        answer
    }

    async fn get(
        &mut self,
        template: &str,
        path: &str,
        token: &str,
        expected: StatusCode,
    ) -> common::Answer {
        self.call(
            Method::GET,
            template,
            path,
            Some(token),
            None,
            &[],
            expected,
        )
        .await
    }

    async fn send(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        token: &str,
        body: Value,
        expected: StatusCode,
    ) -> common::Answer {
        self.call(
            method,
            template,
            path,
            Some(token),
            Some(body),
            &[],
            expected,
        )
        .await
    }
}

const T: &str = "/api/v1/tenants/{tenant}";

async fn real_answers_match_the_document(db: Database) {
    let app = TestApp::start(&db).await;
    let doc = Doc::fetch(&app).await;
    let mut c = Checked {
        app: &app,
        doc: &doc,
        calls: 0,
    };
    use Method as M;
    use StatusCode as S;

    // Operations.
    c.call(M::GET, "/healthz", "/healthz", None, None, &[], S::OK)
        .await;
    c.call(M::GET, "/readyz", "/readyz", None, None, &[], S::OK)
        .await;

    // Tenants.
    let created = c
        .send(
            M::POST,
            "/api/v1/tenants",
            "/api/v1/tenants",
            ROOT,
            json!({"name": "acme"}),
            S::CREATED,
        )
        .await;
    let enrollment_key = created.body["enrollment_key"]
        .as_str()
        .expect("key")
        .to_owned();
    c.send(
        M::POST,
        "/api/v1/tenants",
        "/api/v1/tenants",
        ROOT,
        json!({"name": "acme"}),
        S::CONFLICT,
    )
    .await;
    c.send(
        M::POST,
        "/api/v1/tenants",
        "/api/v1/tenants",
        ROOT,
        json!({"name": "Not Valid!"}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        "/api/v1/tenants",
        "/api/v1/tenants",
        ROOT,
        json!({"nom": "acme"}),
        S::BAD_REQUEST,
    )
    .await;
    c.call(
        M::GET,
        "/api/v1/tenants",
        "/api/v1/tenants",
        None,
        None,
        &[],
        S::UNAUTHORIZED,
    )
    .await;
    c.get("/api/v1/tenants", "/api/v1/tenants", ROOT, S::OK)
        .await;
    c.get(T, "/api/v1/tenants/acme", ROOT, S::OK).await;
    c.get(T, "/api/v1/tenants/nowhere", ROOT, S::NOT_FOUND)
        .await;
    c.send(
        M::POST,
        &format!("{T}/scim-token"),
        "/api/v1/tenants/acme/scim-token",
        ROOT,
        json!({}),
        S::OK,
    )
    .await;

    // Tokens.
    let tokens = format!("{T}/tokens");
    let admin = c
        .send(
            M::POST,
            &tokens,
            "/api/v1/tenants/acme/tokens",
            ROOT,
            json!({"name": "admin", "role": "admin"}),
            S::CREATED,
        )
        .await;
    let admin = admin.body["token"].as_str().expect("token").to_owned();
    let admin = admin.as_str();
    let viewer = c
        .send(
            M::POST,
            &tokens,
            "/api/v1/tenants/acme/tokens",
            admin,
            json!({"name": "viewer", "role": "viewer"}),
            S::CREATED,
        )
        .await;
    let viewer = viewer.body["token"].as_str().expect("token").to_owned();
    c.send(
        M::POST,
        &tokens,
        "/api/v1/tenants/acme/tokens",
        admin,
        json!({"name": "x", "role": "owner"}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        &tokens,
        "/api/v1/tenants/acme/tokens",
        &viewer,
        json!({"name": "x", "role": "admin"}),
        S::FORBIDDEN,
    )
    .await;
    let listed = c
        .get(&tokens, "/api/v1/tenants/acme/tokens", admin, S::OK)
        .await;
    assert!(
        listed.body["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    );
    c.call(
        M::DELETE,
        &format!("{tokens}/{{id}}"),
        "/api/v1/tenants/acme/tokens/nope",
        Some(admin),
        None,
        &[],
        S::NOT_FOUND,
    )
    .await;

    // Accounts, invitations and sessions (the Admins page's API).
    let accounts = format!("{T}/accounts");
    let ada = c
        .send(
            M::POST,
            &accounts,
            "/api/v1/tenants/acme/accounts",
            admin,
            json!({"email": "ada@acme.test", "password": "correct horse battery", "role": "admin"}),
            S::CREATED,
        )
        .await;
    let ada_id = ada.body["id"].as_str().expect("id").to_owned();
    let invitations = format!("{T}/invitations");
    c.send(
        M::POST,
        &invitations,
        "/api/v1/tenants/acme/invitations",
        admin,
        json!({"email": "bea@acme.test", "role": "viewer"}),
        S::CREATED,
    )
    .await;
    for (body, status) in [
        (
            json!({"email": "ada@acme.test", "role": "viewer"}),
            S::CONFLICT,
        ),
        (
            json!({"email": "not an email", "role": "viewer"}),
            S::UNPROCESSABLE_ENTITY,
        ),
    ] {
        c.send(
            M::POST,
            &invitations,
            "/api/v1/tenants/acme/invitations",
            admin,
            body,
            status,
        )
        .await;
    }
    c.get(&accounts, "/api/v1/tenants/acme/accounts", admin, S::OK)
        .await;
    c.send(
        M::PATCH,
        &format!("{accounts}/{{id}}"),
        &format!("/api/v1/tenants/acme/accounts/{ada_id}"),
        admin,
        json!({"role": "viewer"}),
        S::CONFLICT,
    )
    .await;
    let signed_in = c
        .app
        .client
        .post(format!("{}/portal/login", c.app.base))
        .json(&json!({"email": "ada@acme.test", "password": "correct horse battery"}))
        .send()
        .await
        .expect("signed in");
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("cookie")
        .to_owned();
    let sessions = format!("{T}/sessions");
    let listed = c
        .call(
            M::GET,
            &sessions,
            "/api/v1/tenants/acme/sessions",
            None,
            None,
            &[("cookie", cookie.as_str())],
            S::OK,
        )
        .await;
    assert_eq!(listed.body["items"][0]["current"], true);
    c.get(
        &sessions,
        "/api/v1/tenants/acme/sessions",
        &viewer,
        S::FORBIDDEN,
    )
    .await;
    c.call(
        M::DELETE,
        &format!("{sessions}/{{id}}"),
        "/api/v1/tenants/acme/sessions/nope",
        Some(admin),
        None,
        &[],
        S::NOT_FOUND,
    )
    .await;
    c.call(
        M::DELETE,
        "/api/v1/me/sessions",
        "/api/v1/me/sessions",
        Some(admin),
        None,
        &[],
        S::UNPROCESSABLE_ENTITY,
    )
    .await;

    // Groups and users.
    let groups = format!("{T}/groups");
    let group = c
        .send(
            M::POST,
            &groups,
            "/api/v1/tenants/acme/groups",
            admin,
            json!({"display_name": "Engineering"}),
            S::CREATED,
        )
        .await;
    let group_id = group.body["id"].as_str().expect("id").to_owned();
    c.send(
        M::POST,
        &groups,
        "/api/v1/tenants/acme/groups",
        admin,
        json!({"display_name": ""}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        &groups,
        "/api/v1/tenants/acme/groups",
        &viewer,
        json!({"display_name": "No"}),
        S::FORBIDDEN,
    )
    .await;
    let page = c
        .get(
            &groups,
            "/api/v1/tenants/acme/groups?search=eng&limit=1",
            admin,
            S::OK,
        )
        .await;
    assert_eq!(page.body["items"][0]["id"], group_id.as_str());
    c.get(
        &groups,
        "/api/v1/tenants/acme/groups?limit=many",
        admin,
        S::BAD_REQUEST,
    )
    .await;
    c.get(
        &format!("{groups}/{{id}}"),
        &format!("/api/v1/tenants/acme/groups/{group_id}"),
        admin,
        S::OK,
    )
    .await;
    c.get(
        &format!("{groups}/{{id}}"),
        "/api/v1/tenants/acme/groups/nope",
        admin,
        S::NOT_FOUND,
    )
    .await;
    let users = format!("{T}/users");
    c.send(
        M::POST,
        &users,
        "/api/v1/tenants/acme/users",
        admin,
        json!({"user_name": "ada", "display_name": "Ada", "groups": [group_id]}),
        S::CREATED,
    )
    .await;
    c.send(
        M::POST,
        &users,
        "/api/v1/tenants/acme/users",
        admin,
        json!({"user_name": "ADA", "groups": []}),
        S::CONFLICT,
    )
    .await;
    c.get(
        &format!("{users}/{{user}}"),
        "/api/v1/tenants/acme/users/ada",
        admin,
        S::OK,
    )
    .await;
    c.get(
        &format!("{users}/{{user}}"),
        "/api/v1/tenants/acme/users/nobody",
        admin,
        S::NOT_FOUND,
    )
    .await;
    c.send(
        M::PATCH,
        &format!("{users}/{{user}}"),
        "/api/v1/tenants/acme/users/ada",
        admin,
        json!({"active": true}),
        S::OK,
    )
    .await;

    // Device groups, with posture rules of every value type.
    let device_groups = format!("{T}/device-groups");
    let rule = json!({"name": "Laptops", "os": ["macos", "windows"], "ownership": ["corporate"],
        "posture": [{"key": "disk_encrypted", "op": "eq", "value": true},
                    {"key": "os_version", "op": "gte", "value": "14.0"},
                    {"key": "score", "op": "eq", "value": 7}]});
    let device_group = c
        .send(
            M::POST,
            &device_groups,
            "/api/v1/tenants/acme/device-groups",
            admin,
            rule.clone(),
            S::CREATED,
        )
        .await;
    let device_group_id = device_group.body["id"].as_str().expect("id").to_owned();
    c.send(
        M::POST,
        &device_groups,
        "/api/v1/tenants/acme/device-groups",
        admin,
        rule.clone(),
        S::CONFLICT,
    )
    .await;
    c.send(
        M::POST,
        &device_groups,
        "/api/v1/tenants/acme/device-groups",
        admin,
        json!({"name": "Bad", "os": ["beos"], "ownership": [], "posture": []}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        &format!("{device_groups}/preview"),
        "/api/v1/tenants/acme/device-groups/preview",
        admin,
        rule.clone(),
        S::OK,
    )
    .await;
    c.get(
        &device_groups,
        "/api/v1/tenants/acme/device-groups",
        admin,
        S::OK,
    )
    .await;
    let one = format!("{device_groups}/{{id}}");
    let one_path = format!("/api/v1/tenants/acme/device-groups/{device_group_id}");
    c.get(&one, &one_path, admin, S::OK).await;
    c.send(M::PUT, &one, &one_path, admin, rule.clone(), S::OK)
        .await;
    // Renaming to another group's name is a conflict, which Schemathesis
    // found undocumented.
    let mut other = rule.clone();
    other["name"] = json!("Desktops");
    let other = c
        .send(
            M::POST,
            &device_groups,
            "/api/v1/tenants/acme/device-groups",
            admin,
            other,
            S::CREATED,
        )
        .await;
    let other_path = format!(
        "/api/v1/tenants/acme/device-groups/{}",
        other.body["id"].as_str().expect("id")
    );
    c.send(M::PUT, &one, &other_path, admin, rule.clone(), S::CONFLICT)
        .await;
    c.send(
        M::PUT,
        &one,
        "/api/v1/tenants/acme/device-groups/nope",
        admin,
        rule.clone(),
        S::NOT_FOUND,
    )
    .await;

    // Entitlements: read, save with If-Match, a stale save, preview, history, rollback.
    c.get(
        &format!("{T}/entitlements"),
        "/api/v1/tenants/acme/entitlements",
        admin,
        S::OK,
    )
    .await;
    let service = format!("{T}/entitlements/{{service}}");
    let read = c
        .get(
            &service,
            "/api/v1/tenants/acme/entitlements/private_access",
            admin,
            S::OK,
        )
        .await;
    let etag = read.etag.expect("etag");
    c.get(
        &service,
        "/api/v1/tenants/acme/entitlements/nope",
        admin,
        S::NOT_FOUND,
    )
    .await;
    let chosen = settings(false, &[&group_id], &[&device_group_id]);
    c.call(
        M::PUT,
        &service,
        "/api/v1/tenants/acme/entitlements/private_access",
        Some(admin),
        Some(chosen.clone()),
        &[("If-Match", &etag)],
        S::OK,
    )
    .await;
    c.call(
        M::PUT,
        &service,
        "/api/v1/tenants/acme/entitlements/private_access",
        Some(admin),
        Some(chosen.clone()),
        &[("If-Match", &etag)],
        S::PRECONDITION_FAILED,
    )
    .await;
    c.send(
        M::PUT,
        &service,
        "/api/v1/tenants/acme/entitlements/private_access",
        admin,
        settings(false, &["nope"], &[]),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        &format!("{service}/preview"),
        "/api/v1/tenants/acme/entitlements/private_access/preview",
        admin,
        settings(true, &[], &[]),
        S::OK,
    )
    .await;
    let history = c
        .get(
            &format!("{T}/entitlements/history"),
            "/api/v1/tenants/acme/entitlements/history?service=private_access&limit=5",
            admin,
            S::OK,
        )
        .await;
    let first = history.body["items"]
        .as_array()
        .and_then(|items| items.last())
        .and_then(|item| item["config_version"].as_i64())
        .expect("a history item");
    let rollback = format!("{T}/entitlements/rollback");
    c.send(
        M::POST,
        &rollback,
        "/api/v1/tenants/acme/entitlements/rollback",
        admin,
        json!({"config_version": first}),
        S::OK,
    )
    .await;
    c.send(
        M::POST,
        &rollback,
        "/api/v1/tenants/acme/entitlements/rollback",
        admin,
        json!({"config_version": 999_999}),
        S::NOT_FOUND,
    )
    .await;

    // Enrollment keys.
    let keys = format!("{T}/enrollment-keys");
    let key = c
        .send(
            M::POST,
            &keys,
            "/api/v1/tenants/acme/enrollment-keys",
            admin,
            json!({"name": "Laptops", "ownership": "corporate", "max_uses": 5}),
            S::CREATED,
        )
        .await;
    let key_id = key.body["id"].as_str().expect("id").to_owned();
    c.send(
        M::POST,
        &keys,
        "/api/v1/tenants/acme/enrollment-keys",
        admin,
        json!({"name": "Bad", "ownership": "borrowed"}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.get(&keys, "/api/v1/tenants/acme/enrollment-keys", admin, S::OK)
        .await;
    c.call(
        M::DELETE,
        &format!("{keys}/{{id}}"),
        &format!("/api/v1/tenants/acme/enrollment-keys/{key_id}"),
        Some(admin),
        None,
        &[],
        S::OK,
    )
    .await;

    // Enrollment and sync, with posture facts of every type.
    let mut device = report("ada-mbp", "macos", "4.0", "corporate", true);
    device["posture"]["score"] = json!(7);
    let enrolled = c
        .call(
            M::POST,
            "/agent/v1/enroll",
            "/agent/v1/enroll",
            None,
            Some(json!({"enrollment_key": enrollment_key, "user_name": "ada", "device": device})),
            &[],
            S::CREATED,
        )
        .await;
    let device_id = enrolled.body["device_id"].as_str().expect("id").to_owned();
    let device_token = enrolled.body["device_token"]
        .as_str()
        .expect("token")
        .to_owned();
    c.call(
        M::POST,
        "/agent/v1/enroll",
        "/agent/v1/enroll",
        None,
        Some(json!({"enrollment_key": "wrong", "user_name": "ada", "device": device})),
        &[],
        S::UNAUTHORIZED,
    )
    .await;
    c.call(
        M::POST,
        "/agent/v1/enroll",
        "/agent/v1/enroll",
        None,
        Some(json!({"enrollment_key": enrollment_key, "user_name": "nobody", "device": device})),
        &[],
        S::FORBIDDEN,
    )
    .await;
    let synced = sync(&app, &device_token, &device, None, None).await;
    assert_eq!(synced.status, S::OK);
    doc.check("post", "/agent/v1/sync", synced.status, &synced.body);
    let unchanged = sync(
        &app,
        &device_token,
        &device,
        synced.etag.as_deref(),
        Some(0),
    )
    .await;
    assert_eq!(unchanged.status, S::NOT_MODIFIED);
    doc.check("post", "/agent/v1/sync", unchanged.status, &unchanged.body);
    let forged = sync(&app, "ent_dev_forged", &device, None, None).await;
    assert_eq!(forged.status, S::UNAUTHORIZED);
    doc.check("post", "/agent/v1/sync", forged.status, &forged.body);

    // Devices, approval and audit.
    let devices = format!("{T}/devices");
    c.get(
        &devices,
        "/api/v1/tenants/acme/devices?user_name=ada&limit=10",
        admin,
        S::OK,
    )
    .await;
    let device_path = format!("/api/v1/tenants/acme/devices/{device_id}");
    let detail = c
        .get(&format!("{devices}/{{id}}"), &device_path, admin, S::OK)
        .await;
    assert_eq!(detail.body["posture"]["score"], json!(7.0));
    c.get(
        &format!("{devices}/{{id}}"),
        "/api/v1/tenants/acme/devices/nope",
        admin,
        S::NOT_FOUND,
    )
    .await;
    c.send(
        M::PATCH,
        &format!("{devices}/{{id}}"),
        &device_path,
        admin,
        json!({"ownership": "corporate"}),
        S::OK,
    )
    .await;
    c.send(
        M::PATCH,
        &format!("{devices}/{{id}}"),
        &device_path,
        admin,
        json!({"ownership": "borrowed"}),
        S::UNPROCESSABLE_ENTITY,
    )
    .await;
    c.send(
        M::POST,
        &format!("{devices}/approve"),
        "/api/v1/tenants/acme/devices/approve",
        admin,
        json!({"ids": [device_id, "nope"]}),
        S::OK,
    )
    .await;
    let approval = format!("{T}/device-approval");
    c.get(
        &approval,
        "/api/v1/tenants/acme/device-approval",
        admin,
        S::OK,
    )
    .await;
    c.send(
        M::PUT,
        &approval,
        "/api/v1/tenants/acme/device-approval",
        admin,
        json!({"device_approval": false}),
        S::OK,
    )
    .await;
    c.get(
        &format!("{T}/audit"),
        "/api/v1/tenants/acme/audit?limit=20",
        admin,
        S::OK,
    )
    .await;
    c.get(
        &format!("{T}/audit"),
        "/api/v1/tenants/acme/audit?limit=5&action=device.&actor=admin&q=a&from=2020-01-01T00:00:00Z",
        admin,
        S::OK,
    )
    .await;
    c.get(
        &format!("{T}/audit"),
        "/api/v1/tenants/acme/audit?from=yesterday",
        admin,
        S::BAD_REQUEST,
    )
    .await;
    c.get(
        &format!("{T}/audit/export"),
        "/api/v1/tenants/acme/audit/export?format=json&action=device.",
        admin,
        S::OK,
    )
    .await;
    c.get(
        &format!("{T}/directory/status"),
        "/api/v1/tenants/acme/directory/status",
        admin,
        S::OK,
    )
    .await;

    // Deletions: refused while in use, then forced.
    c.call(
        M::DELETE,
        &one,
        &one_path,
        Some(admin),
        None,
        &[],
        S::CONFLICT,
    )
    .await;
    c.call(
        M::DELETE,
        &one,
        &format!("{one_path}?force=true"),
        Some(admin),
        None,
        &[],
        S::OK,
    )
    .await;
    c.call(
        M::DELETE,
        &format!("{groups}/{{id}}"),
        &format!("/api/v1/tenants/acme/groups/{group_id}?force=true"),
        Some(admin),
        None,
        &[],
        S::OK,
    )
    .await;
    c.call(
        M::DELETE,
        &format!("{devices}/{{id}}"),
        &device_path,
        Some(admin),
        None,
        &[],
        S::NO_CONTENT,
    )
    .await;

    // A body over the limit.
    let huge = json!({"display_name": "x".repeat(2 * 1024 * 1024)});
    c.send(
        M::POST,
        &groups,
        "/api/v1/tenants/acme/groups",
        admin,
        huge,
        S::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Last, since it shuts this address out: failed authentication is rate limited.
    let mut limited = None;
    for _ in 0..40 {
        let answer = app
            .get("/api/v1/tenants/acme/groups", "garbage-token")
            .await;
        if answer.status == S::TOO_MANY_REQUESTS {
            limited = Some(answer);
            break;
        }
        doc.check("get", &groups, answer.status, &answer.body);
    }
    let limited = limited.expect("failed authentication is rate limited");
    doc.check("get", &groups, limited.status, &limited.body);
    assert!(c.calls > 60, "only {} calls were checked", c.calls);
}

on_both_backends!(
    the_document_describes_every_route_and_types_posture,
    real_answers_match_the_document,
);
