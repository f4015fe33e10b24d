//! Device listings over a fleet of 5,000 users and 10,000 devices: every
//! filter applies to the whole set before paging, the pages of a keyset
//! cursor concatenate to exactly the filtered set, and devices enrolled
//! between page requests make no page repeat or skip a device.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Database, TestApp, settings};
use entitle_core::{ClientVersion, DeviceReport, Os, Ownership};
use entitle_store::{Actor, DirectoryStore, Enrollment, NewUser, SqlStore, User};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

const USERS: usize = 5_000;
const DEVICES: usize = 10_000;
const OSES: [Os; 3] = [Os::Windows, Os::Macos, Os::Linux];

fn device_report(i: usize) -> DeviceReport {
    DeviceReport {
        hostname: format!("host-{i:05}"),
        os: OSES[i % 3],
        client_version: ClientVersion::parse(&format!("4.{}", i % 5)).expect("version"),
        ownership: if i.is_multiple_of(4) {
            Ownership::Personal
        } else {
            Ownership::Corporate
        },
        posture: BTreeMap::new(),
    }
}

/// Seeds users and devices through the store's test-only bulk writes: the
/// same rows as one `create_user` or `enroll_device` call each, in a few
/// transactions instead of 15,000 commits.
async fn seed(store: &SqlStore, tenant_id: &str, users: usize, devices: usize) -> Vec<User> {
    let new_users: Vec<NewUser> = (0..users)
        .map(|i| NewUser {
            user_name: format!("user{i:05}@acme.test"),
            display_name: None,
            groups: Vec::new(),
        })
        .collect();
    let made = store
        .create_users(tenant_id, &new_users, &Actor::system())
        .await
        .expect("users");
    // Four transactions at once: on PostgreSQL the round trips of one overlap
    // the others' work (SQLite takes them in turn).
    let start = OffsetDateTime::now_utc();
    let quarter = devices.div_ceil(4);
    let parts = (0..devices).step_by(quarter).map(|first| {
        let range = first..(first + quarter).min(devices);
        enroll(store, tenant_id, &made, range, start)
    });
    futures_util::future::join_all(parts).await;
    made
}

/// Enrolls devices `range` in one transaction: device `i` belongs to user
/// `i % users.len()` and last synced `i` seconds before `start`.
async fn enroll(
    store: &SqlStore,
    tenant_id: &str,
    users: &[User],
    range: std::ops::Range<usize>,
    start: OffsetDateTime,
) {
    let made: Vec<(usize, String, DeviceReport)> = range
        .map(|i| (i, format!("token-{i}"), device_report(i)))
        .collect();
    let devices: Vec<Enrollment> = made
        .iter()
        .map(|(i, token, report)| Enrollment {
            user: &users[i % users.len()],
            token_hash: token,
            report,
            at: start - time::Duration::seconds(*i as i64),
        })
        .collect();
    store
        .enroll_devices(tenant_id, &devices)
        .await
        .expect("devices");
}

/// Every device of a listing, page by page; panics on a repeated device.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{separator}limit={limit}&cursor={c}"),
            None => format!("{path}{separator}limit={limit}"),
        };
        let answer = app.get(&url, token).await;
        assert_eq!(answer.status, StatusCode::OK, "{url}: {:?}", answer.body);
        let page = answer.body["items"].as_array().expect("items").clone();
        assert!(page.len() <= limit as usize);
        for item in page {
            let id = item["id"].as_str().expect("id").to_owned();
            assert!(seen.insert(id.clone()), "{path}: device {id} on two pages");
            items.push(item);
        }
        assert_eq!(
            answer.body["more"].as_bool(),
            Some(answer.body["next_cursor"].is_string())
        );
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// The export, one map of column to value per device.
async fn export(app: &TestApp, token: &str, path: &str) -> Vec<BTreeMap<String, String>> {
    let response = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let text = response.text().await.expect("body");
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let head: Vec<String> = lines
        .next()
        .expect("head")
        .split(',')
        .map(str::to_owned)
        .collect();
    lines
        .map(|line| {
            head.iter()
                .cloned()
                .zip(line.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn paging_over_a_fleet(db: Database) {
    let mut app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    // Internet access only for Windows devices; the other services keep
    // their defaults, so "any service off" and "on" differ from it.
    let windows = tenant
        .device_group(&app, json!({"name": "Windows", "os": ["windows"]}))
        .await;
    tenant
        .save(&app, "internet_access", settings(false, &[], &[&windows]))
        .await;
    let store = db.open_sql().await;
    let users = seed(&store, &tenant.id, USERS, DEVICES).await;
    let token = tenant.admin.clone();
    let devices = tenant.path("/devices");

    // The whole set, from the export, is what every filter is checked against.
    let rows = export(&app, &token, &tenant.path("/devices/export.csv")).await;
    assert_eq!(rows.len(), DEVICES);
    let hostnames: Vec<&str> = rows.iter().map(|r| r["hostname"].as_str()).collect();
    let mut sorted = hostnames.clone();
    sorted.sort_unstable();
    assert_eq!(hostnames, sorted, "the export follows the listing's order");
    let expect = |keep: &dyn Fn(&BTreeMap<String, String>) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|r| keep(r))
            .map(|r| r["id"].clone())
            .collect()
    };

    let everything = all_pages(&app, &token, &devices, 200).await;
    assert_eq!(ids(&everything), expect(&|_| true));
    let first = app.get(&format!("{devices}?limit=10"), &token).await;
    assert_eq!(first.body["total"], json!(DEVICES));

    let windows_on = expect(&|r| r["internet_access"] == "on");
    assert_eq!(windows_on.len(), DEVICES.div_ceil(3));
    assert_eq!(
        ids(&all_pages(
            &app,
            &token,
            &format!("{devices}?service=internet_access&state=on"),
            50
        )
        .await),
        windows_on
    );
    assert_eq!(
        ids(&all_pages(
            &app,
            &token,
            &format!("{devices}?service=internet_access&state=off"),
            200
        )
        .await),
        expect(&|r| r["internet_access"] == "off")
    );
    // State without a service: any service in that state.
    let services = ["internet_access", "private_access", "digital_experience"];
    for state in ["on", "off"] {
        let wanted = expect(&|r| services.iter().any(|s| r[*s] == state));
        assert_eq!(
            ids(&all_pages(&app, &token, &format!("{devices}?state={state}"), 200).await),
            wanted,
            "state={state}"
        );
    }
    assert_eq!(
        ids(&all_pages(
            &app,
            &token,
            &format!("{devices}?os=linux&ownership=personal"),
            77
        )
        .await),
        expect(&|r| r["os"] == "linux" && r["ownership"] == "personal")
    );
    let old = all_pages(
        &app,
        &token,
        &format!("{devices}?client_version_below=4.2&state=on"),
        100,
    )
    .await;
    assert_eq!(
        ids(&old),
        expect(&|r| r["client_version"].as_str() < "4.2" && services.iter().any(|s| r[*s] == "on"))
    );
    // Search is trimmed; the total counts the whole filtered set.
    let search = app
        .get(&format!("{devices}?search=%20host-012%20&limit=5"), &token)
        .await;
    assert_eq!(search.body["total"], json!(100));
    assert_eq!(
        ids(&all_pages(
            &app,
            &token,
            &format!("{devices}?search=%20host-012%20"),
            30
        )
        .await),
        expect(&|r| r["hostname"].starts_with("host-012"))
    );

    // Newest first by last sync: device 0 synced last.
    let by_seen = all_pages(
        &app,
        &token,
        &format!("{devices}?sort=last_seen&order=desc&os=macos"),
        200,
    )
    .await;
    let mut wanted: Vec<&BTreeMap<String, String>> =
        rows.iter().filter(|r| r["os"] == "macos").collect();
    wanted.sort_by(|a, b| {
        b["last_seen"]
            .cmp(&a["last_seen"])
            .then(b["id"].cmp(&a["id"]))
    });
    assert_eq!(by_seen.len(), wanted.len());
    assert_eq!(by_seen[0]["hostname"], json!("host-00001"));
    let by_user = all_pages(
        &app,
        &token,
        &format!("{devices}?sort=user_name&service=digital_experience&state=on"),
        200,
    )
    .await;
    let user_names: Vec<&str> = by_user
        .iter()
        .map(|d| d["user_name"].as_str().expect("user"))
        .collect();
    assert!(
        user_names
            .windows(2)
            .all(|w| w[0].to_lowercase() <= w[1].to_lowercase())
    );
    assert_eq!(
        by_user.len(),
        expect(&|r| r["digital_experience"] == "on").len()
    );
    let by_os = all_pages(&app, &token, &format!("{devices}?sort=os&order=desc"), 200).await;
    assert_eq!(by_os.len(), DEVICES);
    assert_eq!(by_os[0]["os"], json!("windows"));

    // Devices enrolled between page requests: no device that existed at the
    // start is repeated (all_pages checks) or skipped.
    let path = format!("{devices}?service=internet_access&state=on");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut next_new = DEVICES;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&limit=150&cursor={c}"),
            None => format!("{path}&limit=150"),
        };
        let answer = app.get(&url, &token).await;
        assert_eq!(answer.status, StatusCode::OK);
        seen.extend(ids(answer.body["items"].as_array().expect("items")));
        enroll(
            &store,
            &tenant.id,
            &users,
            next_new..next_new + 30,
            OffsetDateTime::now_utc(),
        )
        .await;
        next_new += 30;
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no device on two pages");
    for id in &windows_on {
        assert!(unique.contains(id), "device {id} skipped");
    }

    // Users: the 5,000 in pages, by login name, stable while users are added.
    let users_path = tenant.path("/users");
    let first = app.get(&format!("{users_path}?limit=10"), &token).await;
    assert_eq!(first.body["total"], json!(USERS));
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{users_path}?limit=170&cursor={c}"),
            None => format!("{users_path}?limit=170"),
        };
        let answer = app.get(&url, &token).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        for user in answer.body["items"].as_array().expect("items") {
            listed.push(user["user_name"].as_str().expect("name").to_owned());
        }
        // A user whose name sorts into the pages already read, and one after.
        for name in [
            format!("user00000-{added}@acme.test"),
            format!("zz{added}@acme.test"),
        ] {
            let user = NewUser {
                user_name: name,
                display_name: None,
                groups: Vec::new(),
            };
            store
                .create_user(&tenant.id, user, &Actor::system())
                .await
                .expect("user");
        }
        added += 1;
        match answer.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let originals: Vec<&String> = listed
        .iter()
        .filter(|n| n.starts_with("user") && !n.contains('-'))
        .collect();
    assert_eq!(
        originals.len(),
        USERS,
        "every user that existed at the start, once"
    );
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no user on two pages");
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "by login name");
    let found = app
        .get(&format!("{users_path}?search=%20USER0001%20"), &token)
        .await;
    assert_eq!(found.body["total"], json!(10));
    assert_eq!(found.body["items"].as_array().map(Vec::len), Some(10));

    // A cursor belongs to its order, and bad filters are a clear 400.
    let first = app.get(&format!("{devices}?limit=5"), &token).await;
    let cursor = first.body["next_cursor"].as_str().expect("cursor");
    for bad in [
        format!("{devices}?cursor={cursor}&sort=os"),
        format!("{devices}?cursor={cursor}&order=desc"),
        format!("{devices}?cursor=zz"),
        format!("{devices}?cursor=00"),
        format!("{devices}?state=maybe"),
        format!("{devices}?os=beos"),
        format!("{devices}?sort=colour"),
        format!("{devices}?client_version_below=x.y"),
        format!("{devices}?last_seen_before=yesterday"),
    ] {
        let answer = app.get(&bad, &token).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            answer.body
        );
    }
    app.stop().await;
}

on_both_backends!(paging_over_a_fleet);

/// "Sync now" answers the device's held long-poll at once, and only its own;
/// it is audited, refused to viewers and 404 for an unknown device.
async fn sync_now_wakes_the_held_poll(db: Database) {
    let mut app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    tenant.user(&app, "ada@acme.test", &[]).await;
    tenant.user(&app, "bob@acme.test", &[]).await;
    let report = common::report("ada-mbp", "macos", "4.3", "corporate", true);
    let (id, token, _) = tenant.enroll(&app, "ada@acme.test", report.clone()).await;
    let (_, other_token, _) = tenant
        .enroll(
            &app,
            "bob@acme.test",
            common::report("bob-pc", "windows", "4.3", "corporate", true),
        )
        .await;
    let etag = common::sync(&app, &token, &report, None, None)
        .await
        .etag
        .expect("etag");
    let other_etag = common::sync(&app, &other_token, &report, None, None)
        .await
        .etag
        .expect("etag");
    let started = std::time::Instant::now();
    let nudge = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        app.post(
            &tenant.path(&format!("/devices/{id}/resync")),
            &tenant.admin,
            json!({}),
        )
        .await
    };
    let other = async {
        let answer = common::sync(&app, &other_token, &report, Some(&other_etag), Some(3)).await;
        (answer, started.elapsed())
    };
    let (held, answer, (other, other_took)) = tokio::join!(
        common::sync(&app, &token, &report, Some(&etag), Some(30)),
        nudge,
        other
    );
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(held.status, StatusCode::NOT_MODIFIED);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the held poll answered at once"
    );
    // The other device's poll waited for its own deadline.
    assert_eq!(other.status, StatusCode::NOT_MODIFIED);
    assert!(
        other_took >= std::time::Duration::from_millis(2900),
        "{other_took:?}"
    );

    let audit = app.get(&tenant.path("/audit?limit=5"), &tenant.admin).await;
    assert!(
        audit.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["action"] == "device.resync" && e["target"] == "ada-mbp")
    );
    let viewer = app
        .post(
            &tenant.path("/tokens"),
            &tenant.admin,
            json!({"name": "v", "role": "viewer"}),
        )
        .await;
    let viewer = viewer.body["token"].as_str().expect("viewer token");
    let refused = app
        .post(
            &tenant.path(&format!("/devices/{id}/resync")),
            viewer,
            json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let missing = app
        .post(
            &tenant.path("/devices/not-a-device/resync"),
            &tenant.admin,
            json!({}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

on_both_backends!(sync_now_wakes_the_held_poll);

/// `GET /devices` declares its filters as optional query parameters.
#[tokio::test]
async fn the_device_list_parameters_are_optional_query_parameters() {
    let db = Database::sqlite();
    let mut app = TestApp::start(&db).await;
    let doc = app.get("/api/v1/openapi.json", "").await.body;
    let parameters = doc["paths"]["/api/v1/tenants/{tenant}/devices"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .clone();
    assert!(parameters.len() > 10);
    for p in parameters {
        if p["name"] == "tenant" {
            continue;
        }
        assert_eq!(p["in"], "query", "{p}");
        assert_ne!(p["required"], json!(true), "{p}");
    }
    app.stop().await;
}

/// Groups and device groups page with a keyset cursor and report a total.
async fn group_lists_page(db: Database) {
    let mut app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let store = db.open().await;
    for i in 0..230 {
        store
            .create_group(&tenant.id, &format!("Team {i:03}"), &[], &Actor::system())
            .await
            .expect("group");
    }
    for name in ["Macs", "Windows", "Linux", "Phones"] {
        tenant
            .device_group(&app, json!({"name": name, "os": ["macos"]}))
            .await;
    }
    for (path, expected, limit) in [
        (tenant.path("/groups"), 230, 40),
        (tenant.path("/groups?search=%20team%2001"), 10, 3),
        (tenant.path("/device-groups"), 4, 1),
        (tenant.path("/device-groups?search=%20WIN%20"), 1, 1),
    ] {
        let first = app
            .get(
                &format!(
                    "{path}{}limit=5",
                    if path.contains('?') { '&' } else { '?' }
                ),
                &tenant.admin,
            )
            .await;
        assert_eq!(first.body["total"], json!(expected), "{path}");
        let items = all_pages(&app, &tenant.admin, &path, limit).await;
        assert_eq!(items.len(), expected, "{path}");
        let names: Vec<String> = items
            .iter()
            .map(|g| {
                g["display_name"]
                    .as_str()
                    .or(g["name"].as_str())
                    .expect("name")
                    .to_lowercase()
            })
            .collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "{path}: by name");
    }
    for bad in [
        tenant.path("/groups?cursor=zz"),
        tenant.path("/device-groups?cursor=zz"),
        tenant.path("/users?cursor=00"),
    ] {
        let answer = app.get(&bad, &tenant.admin).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {:?}",
            answer.body
        );
    }
    app.stop().await;
}

on_both_backends!(group_lists_page);

/// A bad cursor on the export is a 400 with a body, not a download cut short
/// (Schemathesis found the connection closed without an answer).
async fn export_refuses_a_bad_cursor_before_answering(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    for cursor in ["", "not-a-cursor"] {
        let response = app
            .client
            .get(format!(
                "{}{}",
                app.base,
                tenant.path(&format!("/devices/export.csv?cursor={cursor}"))
            ))
            .bearer_auth(&tenant.admin)
            .send()
            .await
            .expect("an answer, not a closed connection");
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "cursor {cursor:?}"
        );
        let body: Value = response.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "bad_cursor");
    }
}
on_both_backends!(export_refuses_a_bad_cursor_before_answering);

/// A cursor is the caller's hex text: one naming a time no column can hold
/// (PostgreSQL's timestamptz ends before 4713 BC) is a bad cursor, not a 500.
async fn a_cursor_out_of_time_is_a_bad_cursor(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("acme").await;
    let year = |y: i128| (y - 1970) * 365 * 86_400 * 1_000_000_000;
    for nanos in [year(-9_000), year(-5_000), year(-1), year(10_100)] {
        let cursor = hex::encode(format!("last_seen\u{1f}asc\u{1f}{nanos}\u{1f}d_x"));
        let answer = app
            .get(
                &tenant.path(&format!("/devices?sort=last_seen&cursor={cursor}")),
                &tenant.admin,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{nanos}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], "bad_cursor");
    }
    // A cursor this store issued still pages.
    let cursor = hex::encode(format!("last_seen\u{1f}asc\u{1f}{}\u{1f}d_x", year(2026)));
    let answer = app
        .get(
            &tenant.path(&format!("/devices?sort=last_seen&cursor={cursor}")),
            &tenant.admin,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}
on_both_backends!(a_cursor_out_of_time_is_a_bad_cursor);
