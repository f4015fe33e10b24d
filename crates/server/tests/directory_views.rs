//! The directory as people see it: a user's access (groups direct and
//! through nesting with their path, devices, every service's decision), a
//! group's members paged across nested groups (5,000 users: the pages
//! concatenate to exactly the effective membership, each user once), and the
//! group pickers' counts, which are the effective active membership.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{Database, TestApp, report, settings};
use entitle_store::{Actor, DirectoryStore, NewUser};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    user_access_shows_nesting_devices_and_decisions,
    members_page_across_nested_groups_of_5000,
    picker_counts_are_effective_active_members,
);

fn names(path: &Value) -> Vec<String> {
    path.as_array()
        .expect("path")
        .iter()
        .map(|g| g["display_name"].as_str().expect("name").to_owned())
        .collect()
}

async fn deactivate(app: &TestApp, tenant: &common::Tenant, user: &str) {
    let answer = app
        .call(
            Method::PATCH,
            &tenant.path(&format!("/users/{user}")),
            Some(&tenant.admin),
            Some(json!({"active": false})),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
}

async fn user_access_shows_nesting_devices_and_decisions(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let europe = tenant.group(&app, "Europe", &[]).await;
    let finance = tenant.group(&app, "Finance", &[&europe]).await;
    let everyone = tenant.group(&app, "Everyone", &[&finance]).await;
    tenant.user(&app, "ada", &[&europe]).await;
    tenant.user(&app, "bob", &[&finance]).await;
    tenant.user(&app, "carl", &[&europe]).await;
    tenant.user(&app, "dora", &[]).await;
    let managed = tenant
        .device_group(&app, json!({"name": "Managed", "ownership": ["corporate"]}))
        .await;
    tenant
        .save(&app, "private_access", settings(false, &[&finance], &[]))
        .await;
    tenant
        .save(
            &app,
            "digital_experience",
            settings(false, &[], &[&managed]),
        )
        .await;
    let (ada_mac, ..) = tenant
        .enroll(
            &app,
            "ada",
            report("ada-mac", "macos", "4.3", "corporate", true),
        )
        .await;
    tenant
        .enroll(
            &app,
            "ada",
            report("ada-home", "windows", "4.3", "personal", true),
        )
        .await;
    tenant
        .enroll(
            &app,
            "carl",
            report("carl-pc", "windows", "4.3", "corporate", true),
        )
        .await;
    deactivate(&app, &tenant, "carl").await;

    let ada = app
        .get(&tenant.path("/users/ada/access"), &tenant.admin)
        .await;
    assert_eq!(ada.status, StatusCode::OK, "{:?}", ada.body);
    assert_eq!(ada.body["active"], true);
    let groups = ada.body["groups"].as_array().expect("groups");
    let by_name = |name: &str| {
        groups
            .iter()
            .find(|g| g["display_name"] == name)
            .unwrap_or_else(|| panic!("{name} in {groups:?}"))
    };
    assert_eq!(by_name("Europe")["direct"], true);
    assert_eq!(names(&by_name("Europe")["path"]), ["Europe"]);
    assert_eq!(by_name("Finance")["direct"], false);
    assert_eq!(names(&by_name("Finance")["path"]), ["Europe", "Finance"]);
    assert_eq!(
        names(&by_name("Everyone")["path"]),
        ["Europe", "Finance", "Everyone"]
    );
    assert_eq!(groups.len(), 3, "each group once: {groups:?}");
    assert_eq!(groups[0]["display_name"], "Europe", "direct groups first");
    assert_eq!(by_name("Everyone")["id"], everyone.as_str());

    let devices = ada.body["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2);
    let mac = devices
        .iter()
        .find(|d| d["id"] == ada_mac.as_str())
        .expect("ada-mac");
    // Finance selected; Ada is in it through Europe.
    assert_eq!(mac["decisions"]["private_access"]["enabled"], true);
    assert_eq!(mac["decisions"]["private_access"]["reason"], "group_match");
    assert!(
        mac["decisions"]["private_access"]["explanation"]
            .as_str()
            .expect("explanation")
            .contains("Finance")
    );
    assert_eq!(mac["decisions"]["digital_experience"]["enabled"], true);
    assert_eq!(names(&mac["device_groups"]), ["Managed"]);
    let home = devices
        .iter()
        .find(|d| d["hostname"] == "ada-home")
        .expect("ada-home");
    assert_eq!(home["decisions"]["digital_experience"]["enabled"], false);
    assert_eq!(
        home["decisions"]["digital_experience"]["reason"],
        "not_in_device_groups"
    );
    // The user's side: a device meeting the device-group rules gets ZDX.
    assert_eq!(ada.body["user_side"]["digital_experience"]["enabled"], true);
    assert_eq!(ada.body["user_side"]["private_access"]["enabled"], true);

    // A deprovisioned user: shown inactive, every device decision says so.
    let carl = app
        .get(&tenant.path("/users/carl/access"), &tenant.admin)
        .await;
    assert_eq!(carl.status, StatusCode::OK, "{:?}", carl.body);
    assert_eq!(carl.body["active"], false);
    let carl_pc = &carl.body["devices"][0];
    for service in ["private_access", "internet_access", "digital_experience"] {
        assert_eq!(carl_pc["decisions"][service]["enabled"], false, "{service}");
        assert_eq!(carl_pc["decisions"][service]["reason"], "user_inactive");
        assert_eq!(carl.body["user_side"][service]["reason"], "user_inactive");
    }
    assert_eq!(
        names(&carl.body["groups"][1]["path"]),
        ["Europe", "Finance", "Everyone"],
        "then by name"
    );

    // A user without devices: none listed, the user's side still decided.
    let dora = app
        .get(&tenant.path("/users/dora/access"), &tenant.admin)
        .await;
    assert_eq!(dora.body["devices"], json!([]));
    assert_eq!(dora.body["groups"], json!([]));
    assert_eq!(dora.body["user_side"]["private_access"]["enabled"], false);
    assert_eq!(
        dora.body["user_side"]["private_access"]["reason"],
        "not_in_user_groups"
    );
    let bob = app
        .get(&tenant.path("/users/BOB/access"), &tenant.admin)
        .await;
    assert_eq!(bob.body["user_name"], "bob", "login names ignore case");
    assert_eq!(bob.body["user_side"]["private_access"]["enabled"], true);

    // Unknown users, and another tenant's, are 404.
    let unknown = app
        .get(&tenant.path("/users/nobody/access"), &tenant.admin)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let other = app.tenant("other").await;
    let across = app
        .get(&tenant.path("/users/ada/access"), &other.admin)
        .await;
    assert_eq!(across.status, StatusCode::NOT_FOUND);
    let no_token = app
        .call(
            Method::GET,
            &tenant.path("/users/ada/access"),
            None,
            None,
            &[],
        )
        .await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
}

const USERS: usize = 5_000;

/// Which groups user `i` is directly in: `all`, `eu`, `paris` (inside `eu`)
/// or `us`, and every tenth also in `paris`, so that some users reach `all`
/// twice and must be listed once.
fn groups_of(i: usize, all: &str, eu: &str, paris: &str, us: &str) -> Vec<String> {
    let mut groups = vec![[all, eu, paris, us][i % 4].to_owned()];
    if i.is_multiple_of(10) && i % 4 != 2 {
        groups.push(paris.to_owned());
    }
    groups
}

async fn members_page_across_nested_groups_of_5000(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let paris = tenant.group(&app, "Paris", &[]).await;
    let eu = tenant.group(&app, "EU", &[&paris]).await;
    let us = tenant.group(&app, "US", &[]).await;
    let all = tenant.group(&app, "All", &[&eu, &us]).await;
    tenant.group(&app, "Elsewhere", &[]).await;
    let store = db.open_sql().await;
    let actor = Actor::system();
    let users: Vec<NewUser> = (0..USERS)
        .map(|i| NewUser {
            user_name: format!("user{i:05}@acme.test"),
            display_name: None,
            groups: groups_of(i, &all, &eu, &paris, &us),
        })
        .collect();
    // One transaction: the same rows as a `create_user` call each.
    let made = store
        .create_users(&tenant.id, &users, &actor)
        .await
        .expect("users");
    // Every 50th user is deactivated: listed, but not counted as active.
    for user in made.iter().step_by(50) {
        store
            .set_user_active(&tenant.id, &user.id, false, &actor)
            .await
            .expect("deactivate");
    }

    let path = tenant.path(&format!("/groups/{all}/members"));
    let mut seen = BTreeSet::new();
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=200&cursor={c}"),
            None => format!("{path}?limit=200"),
        };
        let answer = app.get(&url, &tenant.admin).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {:?}", answer.body);
        pages += 1;
        if cursor.is_none() {
            assert_eq!(answer.body["total"], json!(USERS));
            assert_eq!(answer.body["active"], json!(USERS - USERS / 50));
        } else {
            assert!(
                answer.body["total"].is_null(),
                "counts on the first page only"
            );
        }
        for item in answer.body["items"].as_array().expect("items") {
            let name = item["user_name"].as_str().expect("name").to_owned();
            assert!(seen.insert(name.clone()), "{name} on two pages");
            let i: usize = name[4..9].parse().expect("number");
            let via = names(&item["via"]);
            // Users also in Paris are direct members of All (or in Paris
            // alone): the shortest way in is the one named.
            let expected: &[&str] = match i % 4 {
                0 => &[],
                1 => &["EU"],
                2 => &["Paris", "EU"],
                _ => &["US"],
            };
            assert_eq!(via, expected, "{name}");
            assert_eq!(item["active"], !i.is_multiple_of(50), "{name}");
            listed.push(name);
        }
        assert_eq!(
            answer.body["more"].as_bool(),
            Some(answer.body["next_cursor"].is_string())
        );
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, USERS.div_ceil(200));
    let expected: Vec<String> = (0..USERS)
        .map(|i| format!("user{i:05}@acme.test"))
        .collect();
    assert_eq!(listed, expected, "every member once, by login name");

    // EU holds its own users and Paris's (and the tenth users also in Paris).
    let eu_first = app
        .get(
            &tenant.path(&format!("/groups/{eu}/members?limit=1")),
            &tenant.admin,
        )
        .await;
    let in_eu = (0..USERS)
        .filter(|i| i % 4 == 1 || i % 4 == 2 || i.is_multiple_of(10))
        .count();
    assert_eq!(eu_first.body["total"], json!(in_eu));

    // The picker's count is the same effective membership, active users only.
    let picked = app
        .get(&tenant.path("/groups?search=all"), &tenant.admin)
        .await;
    let group = &picked.body["items"][0];
    assert_eq!(group["display_name"], "All");
    assert_eq!(group["effective_members"], json!(USERS - USERS / 50));
    assert_eq!(
        group["member_count"],
        json!(USERS / 4 + 2),
        "direct: users and groups"
    );
    let nesting = app
        .get(
            &tenant.path(&format!("/groups/{paris}/nesting")),
            &tenant.admin,
        )
        .await;
    assert_eq!(nesting.status, StatusCode::OK, "{:?}", nesting.body);
    assert_eq!(names(&nesting.body["around"][0]["path"]), ["Paris", "EU"]);
    assert_eq!(
        names(&nesting.body["around"][1]["path"]),
        ["Paris", "EU", "All"]
    );

    // A cursor this listing never gave is a 400, an unknown group a 404.
    let bad = app.get(&format!("{path}?cursor=zz"), &tenant.admin).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let unknown = app
        .get(&tenant.path("/groups/nope/members"), &tenant.admin)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

async fn picker_counts_are_effective_active_members(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let inner = tenant.group(&app, "Inner", &[]).await;
    let outer = tenant.group(&app, "Outer", &[&inner]).await;
    tenant.user(&app, "ana", &[&inner]).await;
    tenant.user(&app, "ben", &[&inner, &outer]).await;
    tenant.user(&app, "cyd", &[&outer]).await;
    tenant.user(&app, "dan", &[&outer]).await;
    deactivate(&app, &tenant, "dan").await;

    let listed = app
        .get(&tenant.path("/groups?search=er"), &tenant.admin)
        .await;
    let count = |name: &str, field: &str| {
        listed.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|g| g["display_name"] == name)
            .map(|g| g[field].clone())
            .unwrap_or_else(|| panic!("{name}: {:?}", listed.body))
    };
    // Outer: ana (through Inner), ben (both, once), cyd; dan is deactivated.
    assert_eq!(count("Outer", "effective_members"), json!(3));
    assert_eq!(
        count("Outer", "member_count"),
        json!(4),
        "direct: ben, cyd, dan, Inner"
    );
    assert_eq!(count("Inner", "effective_members"), json!(2));

    let one = app
        .get(&tenant.path(&format!("/groups/{outer}")), &tenant.admin)
        .await;
    assert_eq!(one.body["effective_members"], json!(3));
    let members = app
        .get(
            &tenant.path(&format!("/groups/{outer}/members")),
            &tenant.admin,
        )
        .await;
    assert_eq!(members.body["active"], json!(3), "the members page agrees");
    assert_eq!(members.body["total"], json!(4));

    // A write through SCIM (no snapshot refresh before answering) is counted at once.
    let scim = app
        .call(
            Method::POST,
            &format!("/scim/v2/{}/Users", tenant.name),
            Some(&tenant.scim_token),
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "eve"})),
            &[],
        )
        .await;
    assert_eq!(scim.status, StatusCode::CREATED, "{:?}", scim.body);
    let eve = scim.body["id"].as_str().expect("id").to_owned();
    let patched = app
        .call(
            Method::PATCH,
            &format!("/scim/v2/{}/Groups/{inner}", tenant.name),
            Some(&tenant.scim_token),
            Some(
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": eve}]}]}),
            ),
            &[],
        )
        .await;
    assert!(patched.status.is_success(), "{:?}", patched.body);
    let again = app
        .get(&tenant.path(&format!("/groups/{outer}")), &tenant.admin)
        .await;
    assert_eq!(again.body["effective_members"], json!(4));
}
