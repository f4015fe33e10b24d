//! The SCIM service provider over HTTP, with the request sequences Entra ID and
//! Okta really send, on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, Tenant, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Scim<'a> {
    app: &'a TestApp,
    t: &'a Tenant,
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    content_type: String,
    body: Value,
}

impl Scim<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.call_as(&self.t.scim_token, method, path, body, headers)
            .await
    }

    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}/scim/v2/{}{path}", self.app.base, self.t.name);
        let mut request = self.app.client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("sent");
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            etag,
            content_type,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, &[]).await
    }
    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body), &[]).await
    }
    async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }
    async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body), &[]).await
    }
}

fn assert_scim_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(
        reply.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], status.to_string());
    if let Some(scim_type) = scim_type {
        assert_eq!(reply.body["scimType"], scim_type, "{}", reply.body);
    }
    assert!(
        reply.content_type.starts_with("application/scim+json"),
        "{}",
        reply.content_type
    );
}

fn patch_op(operations: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations})
}

async fn rfc7644_discovery_and_authentication(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let other = app.tenant("other").await;
    let scim = Scim { app: &app, t: &t };
    let config = scim.get("/ServiceProviderConfig").await;
    assert_eq!(config.status, StatusCode::OK);
    assert_eq!(config.body["patch"]["supported"], true);
    assert_eq!(config.body["bulk"]["supported"], false);
    assert_eq!(config.body["filter"]["maxResults"], 200);
    assert_eq!(config.body["etag"]["supported"], true);
    let types = scim.get("/ResourceTypes").await;
    assert_eq!(types.body["totalResults"], 2);
    let schemas = scim.get("/Schemas").await;
    let user_schema = schemas.body["Resources"]
        .as_array()
        .and_then(|r| r.iter().find(|s| s["name"] == "User"))
        .cloned()
        .expect("User schema");
    assert!(user_schema["attributes"].as_array().is_some_and(|a| {
        a.iter()
            .any(|attr| attr["name"] == "userName" && attr["uniqueness"] == "server")
    }));
    assert_eq!(
        scim.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group")
            .await
            .status,
        StatusCode::OK
    );

    for token in ["wrong", &other.scim_token, &t.admin] {
        let reply = scim.call_as(token, Method::GET, "/Users", None, &[]).await;
        assert_scim_error(&reply, 401, None);
    }
    let unauthenticated = app
        .client
        .get(format!("{}/scim/v2/acme/Users", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_scim_error(&scim.get("/Nothing/Here").await, 404, None);
    // Entra ID adds unknown query parameters to the base URL.
    assert_eq!(
        scim.get("/Users?aadOptscim062020").await.status,
        StatusCode::OK
    );

    let status = app.get(&t.path("/directory/status"), &t.admin).await;
    assert!(
        status.body["last_scim_request_at"].is_string(),
        "{}",
        status.body
    );
    assert!(
        status.body["recent_errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["status"] == 404)),
        "{}",
        status.body
    );
}

async fn entra_provisioning_sequence(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("contoso").await;
    let scim = Scim { app: &app, t: &t };
    // Entra ID's connection test: a random id (404) and a query with no result.
    assert_scim_error(
        &scim
            .get("/Users/00000000-0000-0000-0000-000000000000")
            .await,
        404,
        None,
    );
    let empty = scim
        .get("/Users?filter=userName%20eq%20%22ryan3@contoso.com%22")
        .await;
    assert_eq!(empty.body["totalResults"], 0);
    assert_eq!(empty.body["Resources"], json!([]));

    let created = scim
        .post("/Users", json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "jyoung", "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1", "active": true,
            "displayName": "Jane Young", "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
            "meta": {"resourceType": "User"}, "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
            "roles": [], "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Engineering", "employeeNumber": "1701"},
        }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let user_id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert!(
        created.body["meta"]["location"]
            .as_str()
            .is_some_and(|l| l.ends_with(&format!("/Users/{user_id}")))
    );
    assert_eq!(
        created.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Engineering"
    );
    assert!(created.etag.is_some());

    // Entra filters with unquoted values.
    let found = scim.get("/Users?filter=externalId%20eq%20jyoung").await;
    assert_eq!(found.body["totalResults"], 1, "{}", found.body);

    let group = scim.post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "externalId": "8aa1a0c0", "displayName": "Group1DisplayName", "meta": {"resourceType": "Group"}})).await;
    assert_eq!(group.status, StatusCode::CREATED);
    let group_id = group.body["id"].as_str().expect("id").to_owned();

    let added = scim.patch(&format!("/Groups/{group_id}"), patch_op(json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": user_id}]}]))).await;
    assert!(added.status.is_success(), "{}", added.body);
    let with_members = scim.get(&format!("/Groups/{group_id}")).await;
    assert_eq!(with_members.body["members"][0]["value"], user_id.as_str());
    let without = scim
        .get(&format!("/Groups/{group_id}?excludedAttributes=members"))
        .await;
    assert!(without.body.get("members").is_none());
    let by_member = scim
        .get(&format!(
            "/Groups?filter=members.value%20eq%20%22{user_id}%22"
        ))
        .await;
    assert_eq!(by_member.body["totalResults"], 1);

    let removed = scim
        .patch(
            &format!("/Groups/{group_id}"),
            patch_op(json!([{"op": "Remove", "path": "members", "value": [{"value": user_id}]}])),
        )
        .await;
    assert!(removed.status.is_success(), "{}", removed.body);
    assert!(
        scim.get(&format!("/Groups/{group_id}")).await.body["members"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );

    let updated = scim
        .patch(&format!("/Users/{user_id}"), patch_op(json!([
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Add", "value": {"name.givenName": "Jane", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales"}},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "jane@contoso.com"},
        ])))
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["active"], false);
    assert_eq!(updated.body["name"]["givenName"], "Jane");
    assert_eq!(
        updated.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Sales"
    );
    assert_eq!(updated.body["emails"][0]["value"], "jane@contoso.com");
    let filtered = scim
        .get("/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20eq%20%22jane@contoso.com%22")
        .await;
    assert_eq!(filtered.body["totalResults"], 1, "{}", filtered.body);

    assert_eq!(
        scim.call(Method::DELETE, &format!("/Users/{user_id}"), None, &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_scim_error(&scim.get(&format!("/Users/{user_id}")).await, 404, None);
}

async fn okta_provisioning_sequence(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("okta-co").await;
    let scim = Scim { app: &app, t: &t };
    let exists = scim
        .get("/Users?filter=userName%20eq%20%22isaac.brock@example.com%22&startIndex=1&count=100")
        .await;
    assert_eq!(
        (
            exists.body["totalResults"].clone(),
            exists.body["startIndex"].clone()
        ),
        (json!(0), json!(1))
    );
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "isaac.brock@example.com",
        "name": {"givenName": "Isaac", "familyName": "Brock"}, "emails": [{"primary": true, "value": "isaac.brock@example.com", "type": "work"}],
        "displayName": "Isaac Brock", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7", "groups": [], "password": "1mz050nq", "active": true,
    });
    let created = scim.post("/Users", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(
        created.body.get("password").is_none(),
        "passwords are never stored or returned"
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    let mut duplicate = body.clone();
    duplicate["userName"] = json!("ISAAC.BROCK@example.com");
    assert_scim_error(
        &scim.post("/Users", duplicate).await,
        409,
        Some("uniqueness"),
    );

    // Profile update: a full PUT that includes id and meta.
    let mut profile = created.body.clone();
    profile["name"]["familyName"] = json!("Brocke");
    let replaced = scim.put(&format!("/Users/{id}"), profile).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["name"]["familyName"], "Brocke");
    // Okta deactivates, never deletes.
    let deactivated = scim
        .patch(
            &format!("/Users/{id}"),
            patch_op(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await;
    assert_eq!(deactivated.body["active"], false);

    let other = scim
        .post("/Users", json!({"userName": "other@example.com"}))
        .await;
    let other_id = other.body["id"].as_str().expect("id").to_owned();
    let group = scim.post("/Groups", json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Test SCIMv2", "members": [{"value": id, "display": "isaac"}]})).await;
    let group_id = group.body["id"].as_str().expect("id").to_owned();
    let renamed = scim
        .patch(
            &format!("/Groups/{group_id}"),
            patch_op(
                json!([{"op": "replace", "value": {"id": group_id, "displayName": "Renamed"}}]),
            ),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["displayName"], "Renamed");
    let mixed = scim
        .patch(&format!("/Groups/{group_id}"), patch_op(json!([
            {"op": "remove", "path": format!("members[value eq \"{id}\"]")},
            {"op": "add", "path": "members", "value": [{"value": other_id, "display": "other"}]},
        ])))
        .await;
    assert!(mixed.status.is_success(), "{}", mixed.body);
    let members = scim.get(&format!("/Groups/{group_id}")).await.body["members"].clone();
    assert_eq!(
        members
            .as_array()
            .map(|m| m.iter().map(|v| v["value"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(other_id)])
    );
    // Okta's PUT of a whole group.
    let put = scim.put(&format!("/Groups/{group_id}"), json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": group_id, "displayName": "Renamed", "members": [{"value": id}, {"value": other_id}]})).await;
    assert_eq!(put.body["members"].as_array().map(Vec::len), Some(2));

    // Stable pages.
    let first = scim.get("/Users?startIndex=1&count=1").await;
    let second = scim.get("/Users?startIndex=2&count=1").await;
    assert_eq!(first.body["totalResults"], 2);
    assert_eq!(first.body["itemsPerPage"], 1);
    assert_ne!(
        first.body["Resources"][0]["id"],
        second.body["Resources"][0]["id"]
    );
}

async fn rfc7644_errors(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let scim = Scim { app: &app, t: &t };
    assert_scim_error(
        &scim.get("/Users?filter=userName%20zz%20%22x%22").await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &scim.get("/Users?filter=(userName%20pr").await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &scim
            .post("/Users", json!({"displayName": "no userName"}))
            .await,
        400,
        Some("invalidValue"),
    );
    let raw = app
        .client
        .post(format!("{}/scim/v2/acme/Users", app.base))
        .bearer_auth(&t.scim_token)
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let created = scim.post("/Users", json!({"userName": "ada"})).await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    let stale = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(json!({"userName": "ada", "displayName": "x"})),
            &[("If-Match", "W/\"99\"")],
        )
        .await;
    assert_scim_error(&stale, 412, None);
    let current = created.etag.expect("etag");
    let fresh = scim
        .call(
            Method::PUT,
            &format!("/Users/{id}"),
            Some(json!({"userName": "ada", "displayName": "x"})),
            &[("If-Match", &current)],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_ne!(fresh.etag.as_deref(), Some(current.as_str()));
    let huge = json!({"userName": "big", "displayName": "x".repeat(2 * 1024 * 1024)});
    assert_scim_error(&scim.post("/Users", huge).await, 413, None);
    assert_scim_error(
        &scim
            .patch(
                &format!("/Users/{id}"),
                patch_op(json!([{"op": "replace", "path": "id", "value": "x"}])),
            )
            .await,
        400,
        Some("mutability"),
    );
    assert_scim_error(
        &scim
            .patch(
                &format!("/Users/{id}"),
                json!({"Operations": [{"op": "jump"}]}),
            )
            .await,
        400,
        Some("invalidSyntax"),
    );
    let outer = scim
        .post("/Groups", json!({"displayName": "outer"}))
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let inner = scim
        .post(
            "/Groups",
            json!({"displayName": "inner", "members": [{"value": outer}]}),
        )
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cycle = scim
        .patch(
            &format!("/Groups/{outer}"),
            patch_op(json!([{"op": "add", "path": "members", "value": [{"value": inner}]}])),
        )
        .await;
    assert_scim_error(&cycle, 400, Some("invalidValue"));
    let unknown = scim
        .post(
            "/Groups",
            json!({"displayName": "g", "members": [{"value": "nobody"}]}),
        )
        .await;
    assert_scim_error(&unknown, 400, Some("invalidValue"));
}

async fn directory_changes_reach_entitlements_and_devices(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let scim = Scim { app: &app, t: &t };
    let ada = scim
        .post("/Users", json!({"userName": "ada@acme.test"}))
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let group = scim
        .post("/Groups", json!({"displayName": "Pilots"}))
        .await
        .body["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // A group pushed over SCIM can be selected at once.
    t.save(&app, "private_access", settings(false, &[&group], &[]))
        .await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, policy) = t.enroll(&app, "ada@acme.test", device.clone()).await;
    assert_eq!(
        policy["services"]["private_access"]["reason"],
        "not_in_user_groups"
    );
    let etag = policy["etag"].as_str().expect("etag").to_owned();

    // A membership change over SCIM wakes the device's held long-poll.
    let held = common::hold(&app, &token, &device, &etag);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let added = scim
        .patch(
            &format!("/Groups/{group}"),
            patch_op(json!([{"op": "add", "path": "members", "value": [{"value": ada}]}])),
        )
        .await;
    assert!(added.status.is_success());
    let (status, body, elapsed) = held.await.expect("held");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["services"]["private_access"]["reason"], "group_match");
    assert!(
        elapsed < Duration::from_secs(15),
        "woken by the directory change: {elapsed:?}"
    );

    // Deactivation takes every service away on the next sync.
    scim.patch(
        &format!("/Users/{ada}"),
        patch_op(json!([{"op": "replace", "value": {"active": false}}])),
    )
    .await;
    let after = sync(&app, &token, &device, None, None).await;
    assert_eq!(
        after.body["services"]["internet_access"]["reason"],
        "user_inactive"
    );
    assert_eq!(after.body["services"]["private_access"]["enabled"], false);

    // Deleting the group keeps it in the entitlement as a tombstone that
    // matches nothing (SPEC §11), recorded as a directory change.
    assert_eq!(
        scim.call(Method::DELETE, &format!("/Groups/{group}"), None, &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&t.path("/entitlements/private_access"), &t.admin)
            .await
            .body,
        settings(false, &[&group], &[])
    );
    let audit = app.get(&t.path("/audit"), &t.admin).await;
    let actions: Vec<(String, String)> = audit.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e["actor"].as_str().unwrap_or_default().to_owned(),
                        e["action"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        actions.contains(&("directory".to_owned(), "group.delete".to_owned())),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|(_, action)| action == "entitlement.group_removed"),
        "{actions:?}"
    );

    // Deleting the user keeps the device, which is explained.
    scim.call(Method::DELETE, &format!("/Users/{ada}"), None, &[])
        .await;
    let gone = sync(&app, &token, &device, None, None).await;
    assert_eq!(gone.status, StatusCode::OK);
    assert_eq!(
        gone.body["services"]["internet_access"]["reason"],
        "user_inactive"
    );
    let status = app.get(&t.path("/directory/status"), &t.admin).await;
    assert_eq!(
        (status.body["users"].clone(), status.body["groups"].clone()),
        (json!(0), json!(0))
    );
}

/// A replace or patch that leaves `active` out does not bring a deactivated
/// user back: only `"active": true` does (access fails closed). An active
/// user left without it stays active, as before.
async fn leaving_active_out_never_reactivates_a_user(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let scim = Scim { app: &app, t: &t };
    let ada = scim
        .post("/Users", json!({"userName": "ada@acme.test"}))
        .await;
    let ada = ada.body["id"].as_str().expect("id").to_owned();
    t.save(&app, "private_access", settings(true, &[], &[]))
        .await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada@acme.test", device.clone()).await;
    let path = format!("/Users/{ada}");
    let deactivated = scim
        .patch(
            &path,
            patch_op(json!([{"op": "replace", "path": "active", "value": false}])),
        )
        .await;
    assert_eq!(deactivated.body["active"], false, "{}", deactivated.body);

    let replaced = scim
        .put(
            &path,
            json!({"userName": "ada@acme.test", "displayName": "Ada"}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["active"], false, "{}", replaced.body);
    let removed = scim
        .patch(&path, patch_op(json!([{"op": "remove", "path": "active"}])))
        .await;
    assert_eq!(removed.body["active"], false, "{}", removed.body);
    let nulled = scim
        .patch(
            &path,
            patch_op(json!([{"op": "replace", "value": {"active": null}}])),
        )
        .await;
    assert_eq!(nulled.body["active"], false, "{}", nulled.body);
    let off = sync(&app, &token, &device, None, None).await;
    assert_eq!(
        off.body["services"]["private_access"]["reason"],
        "user_inactive"
    );

    let back = scim
        .patch(
            &path,
            patch_op(json!([{"op": "replace", "path": "active", "value": true}])),
        )
        .await;
    assert_eq!(back.body["active"], true, "{}", back.body);
    // An active user whose `active` is removed stays active and reads back without it.
    let removed = scim
        .patch(&path, patch_op(json!([{"op": "remove", "path": "active"}])))
        .await;
    assert!(removed.body.get("active").is_none(), "{}", removed.body);
    let on = sync(&app, &token, &device, None, None).await;
    assert_eq!(
        on.body["services"]["private_access"]["enabled"], true,
        "{}",
        on.body
    );

    // A PUT reads the user first; without If-Match it asked for no
    // precondition, so replaces racing each other all succeed.
    let racing = (0..8).map(|index| {
        let body = json!({"userName": "ada@acme.test", "displayName": format!("Ada {index}")});
        let (client, url, token) = (
            app.client.clone(),
            format!("{}/scim/v2/{}{path}", app.base, t.name),
            t.scim_token.clone(),
        );
        tokio::spawn(async move {
            let answer = client.put(url).bearer_auth(token).json(&body).send().await;
            answer.expect("sent").status()
        })
    });
    for status in futures_util::future::join_all(racing).await {
        assert_eq!(status.expect("joined"), StatusCode::OK);
    }
}

async fn the_scim_token_can_be_rotated(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let scim = Scim { app: &app, t: &t };
    assert_eq!(scim.get("/Users").await.status, StatusCode::OK);
    // A grace period of 0 ends the old token at once (the default keeps it 24 hours).
    let rotated = app
        .post(
            &t.path("/scim-token"),
            &t.admin,
            json!({"grace_period_hours": 0}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let new_token = rotated.body["scim_token"].as_str().expect("token");
    assert_scim_error(&scim.get("/Users").await, 401, None);
    assert_eq!(
        scim.call_as(new_token, Method::GET, "/Users", None, &[])
            .await
            .status,
        StatusCode::OK
    );
}

on_both_backends!(
    rfc7644_discovery_and_authentication,
    entra_provisioning_sequence,
    okta_provisioning_sequence,
    rfc7644_errors,
    directory_changes_reach_entitlements_and_devices,
    leaving_active_out_never_reactivates_a_user,
    the_scim_token_can_be_rotated,
);
