//! Exclusion groups and staged rollout (issue 15) over HTTP on both back ends:
//! an exclusion beats a group match and "Enabled by Default" (through nested
//! groups) and names the group; a deleted excluded group fails closed;
//! raising a rollout only adds devices; legacy clients ignore both; bad
//! settings are refused with the field they concern; history and rollback
//! carry the new fields.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{Database, TestApp, report, settings, sync};
use entitle_server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    exclusion_beats_groups_and_enabled_by_default_through_nesting,
    a_deleted_excluded_group_fails_closed,
    raising_a_rollout_only_adds_devices,
    legacy_clients_ignore_exclusions_and_rollout,
    bad_settings_are_refused_with_their_field,
    history_and_rollback_carry_exclusions_and_rollout,
    editing_an_excluded_device_group_previews_who_loses,
    deleting_an_excluded_device_group_previews_everyone_losing,
);

async fn policy_of(app: &TestApp, token: &str, hostname: &str, version: &str) -> Value {
    let answer = sync(
        app,
        token,
        &report(hostname, "macos", version, "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

/// Engineering contains Contractors, which contains Contractors EU (nested
/// twice); ana is in Contractors EU, bob in Engineering; both have a laptop.
async fn exclusion_beats_groups_and_enabled_by_default_through_nesting(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eu = t.group(&app, "Contractors EU", &[]).await;
    let contractors = t.group(&app, "Contractors", &[&eu]).await;
    let eng = t.group(&app, "Engineering", &[&contractors]).await;
    t.user(&app, "ana", &[&eu]).await;
    t.user(&app, "bob", &[&eng]).await;
    let kiosks = t
        .device_group(
            &app,
            json!({"name": "Kiosks", "os": ["linux"], "ownership": [], "posture": []}),
        )
        .await;
    let (_, ana, _) = t
        .enroll(
            &app,
            "ana",
            report("ana-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let (_, bob, _) = t
        .enroll(
            &app,
            "bob",
            report("bob-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let (_, kiosk, _) = t
        .enroll(
            &app,
            "bob",
            report("kiosk-1", "linux", "4.0", "corporate", true),
        )
        .await;

    // A group match: Engineering, except Contractors.
    let mut zpa = settings(false, &[&eng], &[]);
    zpa["exclude_user_groups"] = json!([contractors]);
    t.save(&app, "private_access", zpa).await;
    let ana_policy = policy_of(&app, &ana, "ana-mbp", "4.0").await;
    let decision = &ana_policy["services"]["private_access"];
    assert_eq!(decision["enabled"], false, "{decision}");
    assert_eq!(decision["reason"], "excluded_user_group");
    let explanation = decision["explanation"].as_str().unwrap_or_default();
    assert!(explanation.contains("\"Contractors\""), "{explanation}");
    let bob_policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    assert_eq!(bob_policy["services"]["private_access"]["enabled"], true);
    assert_eq!(
        bob_policy["services"]["private_access"]["reason"],
        "group_match"
    );

    // "Enabled by Default" on: exclusions still win (and may be changed while on).
    let mut ebd = settings(true, &[], &[]);
    ebd["exclude_user_groups"] = json!([contractors]);
    ebd["exclude_device_groups"] = json!([kiosks]);
    t.save(&app, "internet_access", ebd).await;
    let ana_policy = policy_of(&app, &ana, "ana-mbp", "4.0").await;
    assert_eq!(ana_policy["services"]["internet_access"]["enabled"], false);
    assert_eq!(
        ana_policy["services"]["internet_access"]["reason"],
        "excluded_user_group"
    );
    let bob_policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    assert_eq!(bob_policy["services"]["internet_access"]["enabled"], true);
    let answer = sync(
        &app,
        &kiosk,
        &report("kiosk-1", "linux", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    let decision = &answer.body["services"]["internet_access"];
    assert_eq!(decision["enabled"], false, "{decision}");
    assert_eq!(decision["reason"], "excluded_device_group");
    assert!(
        decision["explanation"]
            .as_str()
            .unwrap_or_default()
            .contains("\"Kiosks\""),
        "{decision}"
    );

    // The preview of removing the exclusion shows ana's laptop gaining ZPA.
    let preview = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            settings(false, &[&eng], &[]),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    assert_eq!(preview.body["gaining"]["devices"], 1, "{:?}", preview.body);
    assert_eq!(preview.body["gaining"]["sample"], json!(["ana on ana-mbp"]));

    // The settings read back with their exclusions and a full rollout.
    let read = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(read.body["exclude_user_groups"], json!([contractors]));
    assert_eq!(read.body["exclude_device_groups"], json!([]));
    assert_eq!(read.body["rollout_percent"], 100);
}

async fn a_deleted_excluded_group_fails_closed(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let interns = t.group(&app, "Interns", &[]).await;
    t.user(&app, "bob", &[&eng]).await;
    let (_, bob, _) = t
        .enroll(
            &app,
            "bob",
            report("bob-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let mut zpa = settings(false, &[&eng], &[]);
    zpa["exclude_user_groups"] = json!([interns]);
    t.save(&app, "private_access", zpa.clone()).await;
    let mut zia = settings(true, &[], &[]);
    zia["exclude_user_groups"] = json!([interns]);
    t.save(&app, "internet_access", zia).await;
    let policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    assert_eq!(policy["services"]["private_access"]["enabled"], true);
    assert_eq!(policy["services"]["internet_access"]["enabled"], true);

    // Deleting an excluded group is refused unless forced, like a selected one.
    let path = t.path(&format!("/groups/{interns}"));
    let refused = app
        .call(Method::DELETE, &path, Some(&t.admin), None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "group_in_use");
    let forced = app
        .call(
            Method::DELETE,
            &format!("{path}?force=true"),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert!(forced.status.is_success(), "{:?}", forced.body);

    // Who was in Interns cannot be known any more: the service is off for
    // everyone it gave it to through groups or "Enabled by Default".
    let policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    for service in ["private_access", "internet_access"] {
        let decision = &policy["services"][service];
        assert_eq!(decision["enabled"], false, "{service}: {decision}");
        assert_eq!(decision["reason"], "excluded_user_group");
        let explanation = decision["explanation"].as_str().unwrap_or_default();
        assert!(
            explanation.contains("\"Interns\" was deleted")
                && explanation.contains("Remove it from the exclusions"),
            "{explanation}"
        );
    }
    // The tombstone stays in the settings, and another field can still be saved.
    let read = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(read.body["exclude_user_groups"], json!([interns]));
    zpa["logout_on_enable"] = json!(true);
    t.save(&app, "private_access", zpa).await;
    let policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    assert_eq!(policy["services"]["private_access"]["enabled"], false);

    // Removing the tombstone from the exclusions turns the service back on.
    t.save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let policy = policy_of(&app, &bob, "bob-mbp", "4.0").await;
    assert_eq!(policy["services"]["private_access"]["enabled"], true);
}

const FLEET: usize = 500;

async fn raising_a_rollout_only_adds_devices(db: Database) {
    let config = ServerConfig {
        enrollments_per_minute: 10_000,
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    let mut tokens = Vec::with_capacity(FLEET);
    for i in 0..FLEET {
        let (_, token, _) = t
            .enroll(
                &app,
                "ada",
                report(&format!("host-{i}"), "macos", "4.0", "corporate", true),
            )
            .await;
        tokens.push(token);
    }
    let on_at = |percent: u16| {
        let mut zpa = settings(false, &[&eng], &[]);
        zpa["rollout_percent"] = json!(percent);
        zpa
    };

    // The preview of 10 % tells how many each step adds, from the same rule.
    let preview = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            on_at(10),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let steps = preview.body["rollout"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let percents: Vec<u64> = steps.iter().filter_map(|s| s["percent"].as_u64()).collect();
    assert_eq!(percents, vec![1, 5, 10, 25, 50, 75, 100]);
    let last = &steps[steps.len() - 1];
    assert_eq!(last["devices"], FLEET);
    let added: u64 = steps.iter().filter_map(|s| s["added"].as_u64()).sum();
    assert_eq!(added, FLEET as u64, "the steps add up to the fleet");

    async fn enabled(app: &TestApp, tokens: &[String]) -> BTreeSet<usize> {
        let mut on = BTreeSet::new();
        for (i, token) in tokens.iter().enumerate() {
            let policy = policy_of(app, token, &format!("host-{i}"), "4.0").await;
            let decision = &policy["services"]["private_access"];
            if decision["enabled"] == true {
                on.insert(i);
            } else {
                assert_eq!(decision["reason"], "rollout_held_back", "{decision}");
                let explanation = decision["explanation"].as_str().unwrap_or_default();
                assert!(explanation.contains(" % "), "{explanation}");
            }
        }
        on
    }

    t.save(&app, "private_access", on_at(10)).await;
    let at_10 = enabled(&app, &tokens).await;
    let step_10 = steps.iter().find(|s| s["percent"] == 10).cloned();
    assert_eq!(
        step_10.map(|s| s["devices"].clone()),
        Some(json!(at_10.len())),
        "the preview counted what the agents get"
    );
    t.save(&app, "private_access", on_at(20)).await;
    let at_20 = enabled(&app, &tokens).await;
    assert!(
        at_10.is_subset(&at_20),
        "raising 10 % to 20 % removed {:?}",
        at_10.difference(&at_20).collect::<Vec<_>>()
    );
    // About 10 % of 500 each: 50 expected, a fair hash stays within 25..=75.
    assert!((25..=75).contains(&at_10.len()), "{} at 10 %", at_10.len());
    let added = at_20.len() - at_10.len();
    assert!((25..=75).contains(&added), "{added} added by 10 % → 20 %");
    // Lowering it again removes exactly those added.
    t.save(&app, "private_access", on_at(10)).await;
    assert_eq!(enabled(&app, &tokens).await, at_10);
}

async fn legacy_clients_ignore_exclusions_and_rollout(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let contractors = t.group(&app, "Contractors", &[]).await;
    t.user(&app, "ana", &[&contractors]).await;
    // ZPA before 1.2.4 always runs it; ZDX before 2.2.1 follows only the toggle.
    let (_, old, _) = t
        .enroll(
            &app,
            "ana",
            report("ana-old", "macos", "1.0", "corporate", true),
        )
        .await;
    let (_, new, _) = t
        .enroll(
            &app,
            "ana",
            report("ana-new", "macos", "4.0", "corporate", true),
        )
        .await;
    for service in ["private_access", "digital_experience"] {
        let mut s = settings(true, &[], &[]);
        s["exclude_user_groups"] = json!([contractors]);
        s["rollout_percent"] = json!(1);
        t.save(&app, service, s).await;
    }
    let policy = policy_of(&app, &old, "ana-old", "1.0").await;
    for service in ["private_access", "digital_experience"] {
        let decision = &policy["services"][service];
        assert_eq!(decision["enabled"], true, "{service}: {decision}");
        assert_eq!(decision["reason"], "legacy_client");
    }
    let policy = policy_of(&app, &new, "ana-new", "4.0").await;
    for service in ["private_access", "digital_experience"] {
        assert_eq!(policy["services"][service]["reason"], "excluded_user_group");
    }
    // The preview lists the legacy client: it will not honour the exclusion.
    let mut proposed = settings(true, &[], &[]);
    proposed["exclude_user_groups"] = json!([contractors]);
    let preview = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            proposed,
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    assert_eq!(
        preview.body["legacy_clients"]["sample"],
        json!(["ana on ana-old"])
    );
}

async fn bad_settings_are_refused_with_their_field(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let path = t.path("/entitlements/private_access");
    let cases = [
        (
            json!({"exclude_user_groups": ["no-such-group"]}),
            422,
            "exclude_user_groups",
        ),
        (
            json!({"exclude_device_groups": ["no-such-group"]}),
            422,
            "exclude_device_groups",
        ),
        (json!({"rollout_percent": 0}), 422, "rollout_percent"),
        (json!({"rollout_percent": 101}), 422, "rollout_percent"),
        (json!({"rollout_percent": 60000}), 422, "rollout_percent"),
    ];
    for (change, status, field) in cases {
        let mut body = settings(false, &[], &[]);
        if let (Some(body), Some(change)) = (body.as_object_mut(), change.as_object()) {
            body.extend(change.clone());
        }
        for target in [path.clone(), format!("{path}/preview")] {
            let method = if target.ends_with("preview") {
                Method::POST
            } else {
                Method::PUT
            };
            let answer = app
                .call(method, &target, Some(&t.admin), Some(body.clone()), &[])
                .await;
            assert_eq!(
                answer.status.as_u16(),
                status,
                "{target} {body}: {:?}",
                answer.body
            );
            assert_eq!(answer.body["error"]["field"], field, "{target} {body}");
        }
    }
    // A negative or fractional percentage is not a number of the schema: 4xx, never 500.
    for bad in [json!(-1), json!(12.5), json!("10")] {
        let mut body = settings(false, &[], &[]);
        body["rollout_percent"] = bad.clone();
        let answer = app.put(&path, &t.admin, body, None).await;
        assert!(answer.status.is_client_error(), "{bad}: {:?}", answer.body);
    }
    // Nothing was saved.
    let read = app.get(&path, &t.admin).await;
    assert_eq!(read.body["rollout_percent"], 100);
    assert_eq!(read.body["exclude_user_groups"], json!([]));
}

async fn history_and_rollback_carry_exclusions_and_rollout(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let contractors = t.group(&app, "Contractors", &[]).await;
    // v1: Engineering only (written without the new fields at all).
    t.save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    // v2: except Contractors, at 30 %.
    let mut v2 = settings(false, &[&eng], &[]);
    v2["exclude_user_groups"] = json!([contractors]);
    v2["rollout_percent"] = json!(30);
    t.save(&app, "private_access", v2).await;

    let history = app
        .get(
            &t.path("/entitlements/history?service=private_access"),
            &t.admin,
        )
        .await;
    assert_eq!(history.status, StatusCode::OK, "{:?}", history.body);
    let newest = &history.body["items"][0];
    assert_eq!(newest["before"]["exclude_user_groups"], json!([]));
    assert_eq!(newest["before"]["rollout_percent"], 100);
    assert_eq!(newest["after"]["exclude_user_groups"], json!([contractors]));
    assert_eq!(newest["after"]["rollout_percent"], 30);
    assert_eq!(history.body["names"][&contractors], "Contractors");
    let v1 = history.body["items"][1]["config_version"].clone();
    let v2 = newest["config_version"].clone();

    // Restoring v1 reads as no exclusions and everyone.
    let restored = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": v1}),
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(restored.body["settings"]["exclude_user_groups"], json!([]));
    assert_eq!(restored.body["settings"]["rollout_percent"], 100);
    // And restoring v2 brings them back.
    let restored = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": v2}),
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(
        restored.body["settings"]["exclude_user_groups"],
        json!([contractors])
    );
    assert_eq!(restored.body["settings"]["rollout_percent"], 30);

    // A version that excludes a group deleted since is not restored silently:
    // without the exclusion the service would reach more people.
    t.save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let deleted = app
        .call(
            Method::DELETE,
            &t.path(&format!("/groups/{contractors}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    let refused = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": v2}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert_eq!(
        refused.body["error"]["code"],
        "restore_selects_deleted_groups"
    );
}

/// Widening the rule of an excluded device group takes the service from the
/// devices that move into it: the device-group preview says so.
async fn editing_an_excluded_device_group_previews_who_loses(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let kiosks = t
        .device_group(
            &app,
            json!({"name": "Kiosks", "os": ["linux"], "ownership": [], "posture": []}),
        )
        .await;
    t.user(&app, "ada", &[]).await;
    t.enroll(
        &app,
        "ada",
        report("ada-mbp", "macos", "4.0", "corporate", true),
    )
    .await;
    let mut zia = settings(true, &[], &[]);
    zia["exclude_device_groups"] = json!([kiosks]);
    t.save(&app, "internet_access", zia).await;
    let preview = app
        .post(
            &t.path(&format!("/device-groups/{kiosks}/preview")),
            &t.admin,
            json!({"rule": {"name": "Kiosks", "os": ["linux", "macos"], "ownership": []}}),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let services = preview.body["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let zia = services
        .iter()
        .find(|s| s["service"] == "internet_access")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        zia["losing"]["sample"],
        json!(["ada on ada-mbp"]),
        "{preview:?}",
        preview = preview.body
    );
    assert_eq!(preview.body["devices_losing"], 1);
}

/// Deleting a device group that a service excludes leaves a tombstone that
/// turns the service off for everyone it reached: the preview says so, for
/// devices that were never in the group too.
async fn deleting_an_excluded_device_group_previews_everyone_losing(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let kiosks = t
        .device_group(
            &app,
            json!({"name": "Kiosks", "os": ["linux"], "ownership": [], "posture": []}),
        )
        .await;
    t.user(&app, "ada", &[]).await;
    let (_, token, _) = t
        .enroll(
            &app,
            "ada",
            report("ada-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let mut zia = settings(true, &[], &[]);
    zia["exclude_device_groups"] = json!([kiosks]);
    t.save(&app, "internet_access", zia).await;
    let preview = app
        .post(
            &t.path(&format!("/device-groups/{kiosks}/preview")),
            &t.admin,
            json!({"delete": true}),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let zia = preview.body["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == "internet_access"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(zia["losing"]["sample"], json!(["ada on ada-mbp"]), "{zia}");
    assert_eq!(zia["gaining"]["devices"], 0, "{zia}");
    assert_eq!(preview.body["devices_losing"], 1);

    // And the delete (forced) does what the preview said.
    let deleted = app
        .call(
            Method::DELETE,
            &t.path(&format!("/device-groups/{kiosks}?force=true")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);
    let policy = policy_of(&app, &token, "ada-mbp", "4.0").await;
    assert_eq!(policy["services"]["internet_access"]["enabled"], false);
}
