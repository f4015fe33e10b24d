//! Editing or deleting a device group, before it is done: the preview names,
//! per service that selects the group, the devices that would lose or gain
//! it (samples with a count beyond them), changes nothing, and a deletion
//! fails closed. Refused rules name the field they concern.

#[macro_use]
mod common;

use common::{Database, TestApp, report, settings, sync};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    preview_of_an_edit_and_a_delete,
    refused_rules_name_their_field,
);

fn service<'a>(impact: &'a Value, id: &str) -> &'a Value {
    impact["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == id)
        .unwrap_or_else(|| panic!("{id} in {impact}"))
}

async fn preview_of_an_edit_and_a_delete(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let managed = tenant
        .device_group(
            &app,
            json!({"name": "Managed", "os": ["macos", "windows"], "ownership": ["corporate"]}),
        )
        .await;
    let unused = tenant
        .device_group(&app, json!({"name": "Linux", "os": ["linux"]}))
        .await;
    tenant.user(&app, "ada", &[]).await;
    tenant
        .save(&app, "private_access", settings(false, &[], &[&managed]))
        .await;
    let (_, mac_token, _) = tenant
        .enroll(
            &app,
            "ada",
            report("ada-mac", "macos", "4.3", "corporate", true),
        )
        .await;
    for i in 0..12 {
        tenant
            .enroll(
                &app,
                "ada",
                report(&format!("pc-{i:02}"), "windows", "4.3", "corporate", true),
            )
            .await;
    }
    tenant
        .enroll(
            &app,
            "ada",
            report("ada-linux", "linux", "4.3", "corporate", true),
        )
        .await;
    let path = tenant.path(&format!("/device-groups/{managed}/preview"));

    // Narrowing the rule to macOS takes ZPA from the twelve PCs.
    let edit = app
        .post(
            &path,
            &tenant.admin,
            json!({"rule": {"name": "Managed", "os": ["macos"], "ownership": ["corporate"]}}),
        )
        .await;
    assert_eq!(edit.status, StatusCode::OK, "{:?}", edit.body);
    assert_eq!(edit.body["delete"], false);
    assert_eq!(edit.body["devices_before"], 13);
    assert_eq!(edit.body["devices_after"], 1);
    assert_eq!(edit.body["used_by"], json!(["private_access"]));
    assert_eq!(edit.body["devices_losing"], 12);
    let zpa = service(&edit.body, "private_access");
    assert_eq!(zpa["losing"]["devices"], 12);
    assert_eq!(zpa["losing"]["users"], 1);
    let sample = zpa["losing"]["sample"].as_array().expect("sample");
    assert_eq!(sample.len(), 10, "ten named, the rest counted");
    assert_eq!(sample[0], "ada on pc-00");
    assert_eq!(zpa["gaining"]["devices"], 0);
    assert_eq!(
        edit.body["services"].as_array().map(Vec::len),
        Some(1),
        "only services that select the group"
    );

    // Widening it to Linux gives ZPA to the Linux device.
    let widen = app
        .post(
            &path,
            &tenant.admin,
            json!({"rule": {"name": "Managed", "os": ["macos", "windows", "linux"], "ownership": []}}),
        )
        .await;
    let zpa = service(&widen.body, "private_access");
    assert_eq!(zpa["gaining"]["sample"], json!(["ada on ada-linux"]));
    assert_eq!(zpa["losing"]["devices"], 0);
    assert_eq!(widen.body["devices_losing"], 0);

    // Deleting fails closed: every device of the group loses what it gave.
    let delete = app
        .post(&path, &tenant.admin, json!({"delete": true}))
        .await;
    assert_eq!(delete.status, StatusCode::OK, "{:?}", delete.body);
    assert_eq!(delete.body["delete"], true);
    assert_eq!(delete.body["devices_after"], 0);
    assert_eq!(
        service(&delete.body, "private_access")["losing"]["devices"],
        13
    );
    assert_eq!(delete.body["devices_losing"], 13);

    // A preview changes nothing: the group, and the device's policy, stay.
    let group = app
        .get(
            &tenant.path(&format!("/device-groups/{managed}")),
            &tenant.admin,
        )
        .await;
    assert_eq!(group.body["os"], json!(["windows", "macos"]));
    let policy = sync(
        &app,
        &mac_token,
        &report("ada-mac", "macos", "4.3", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(policy.body["services"]["private_access"]["enabled"], true);

    // The preview's deletion is what a forced delete does.
    let forced = app
        .call(
            reqwest::Method::DELETE,
            &tenant.path(&format!("/device-groups/{managed}?force=true")),
            Some(&tenant.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    let after = sync(
        &app,
        &mac_token,
        &report("ada-mac", "macos", "4.3", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(after.body["services"]["private_access"]["enabled"], false);

    // A group no entitlement uses changes no service.
    let free = app
        .post(
            &tenant.path(&format!("/device-groups/{unused}/preview")),
            &tenant.admin,
            json!({"delete": true}),
        )
        .await;
    assert_eq!(free.status, StatusCode::OK, "{:?}", free.body);
    assert_eq!(free.body["services"], json!([]));
    assert_eq!(free.body["devices_before"], 1);

    // Neither or both of rule and delete, an unknown group, another tenant.
    for body in [
        json!({}),
        json!({"delete": true, "rule": {"name": "x"}}),
        json!({"delete": false}),
    ] {
        let refused = app.post(&path, &tenant.admin, body.clone()).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let gone = app
        .post(&path, &tenant.admin, json!({"delete": true}))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "deleted above");
    let other = app.tenant("other").await;
    let across = app
        .post(
            &tenant.path(&format!("/device-groups/{unused}/preview")),
            &other.admin,
            json!({"delete": true}),
        )
        .await;
    assert_eq!(across.status, StatusCode::NOT_FOUND);
}

async fn refused_rules_name_their_field(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let first = tenant
        .device_group(&app, json!({"name": "Managed", "os": ["macos"]}))
        .await;
    let second = tenant
        .device_group(&app, json!({"name": "Phones", "os": ["ios"]}))
        .await;
    let cases = [
        (json!({"name": "  "}), "name", "invalid_rule"),
        (
            json!({"name": "x", "posture": [{"key": "disk_encrypted", "op": "eq", "value": true}, {"key": "os_version", "op": "gte", "value": "new"}]}),
            "posture.1.value",
            "invalid_rule",
        ),
        (
            json!({"name": "x", "posture": [{"key": "", "op": "eq", "value": true}]}),
            "posture.0.key",
            "invalid_rule",
        ),
        (
            json!({"name": "x", "posture": [{"key": "k", "op": "lt", "value": "1"}]}),
            "posture.0.op",
            "invalid_rule",
        ),
        (json!({"name": "x", "os": ["beos"]}), "os", "invalid_rule"),
    ];
    for (body, field, code) in cases {
        for answer in [
            app.post(&tenant.path("/device-groups"), &tenant.admin, body.clone())
                .await,
            app.post(
                &tenant.path("/device-groups/preview"),
                &tenant.admin,
                body.clone(),
            )
            .await,
            app.post(
                &tenant.path(&format!("/device-groups/{first}/preview")),
                &tenant.admin,
                json!({"rule": body.clone()}),
            )
            .await,
        ] {
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(
                answer.body["error"]["field"], field,
                "{body}: {:?}",
                answer.body
            );
            assert_eq!(answer.body["error"]["code"], code);
        }
    }
    // A name another group has is the name field's problem too.
    let taken = app
        .put(
            &tenant.path(&format!("/device-groups/{second}")),
            &tenant.admin,
            json!({"name": "managed", "os": ["ios"]}),
            None,
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{:?}", taken.body);
    assert_eq!(taken.body["error"]["field"], "name");
    // Errors that concern no one field have none.
    let missing = app
        .get(&tenant.path("/device-groups/nope"), &tenant.admin)
        .await;
    assert!(missing.body["error"].get("field").is_none());
}
