//! The audit log over HTTP on both back ends: filters run in the store over
//! the whole log (not over the newest page), keyset pages concatenate to the
//! filtered set, and the export streams exactly that set as CSV or JSON.

#[macro_use]
mod common;

use common::{Database, TestApp};
use entitle_store::{Actor, ActorKind, AuditEntry, PostgresOptions, SqlStore};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Rows seeded: more than two export batches, far more than one page.
const SEEDED: usize = 2_600;

/// The seeded log's rows, oldest first, a minute apart, ten days ago onwards.
fn seeded_rows(start: OffsetDateTime) -> Vec<AuditEntry> {
    let ada = Actor::new(ActorKind::Account, "acc-ada", "Ada@Acme.test");
    let ci = Actor::new(ActorKind::ApiToken, "tok-ci", "ci");
    let forger = Actor::new(ActorKind::Device, "dev-9", "=HYPERLINK(\"http://x\",\"y\")");
    (0..SEEDED)
        .map(|i| {
            let (action, target) = match i % 4 {
                0 => ("device.enroll", format!("host-{}", i % 10)),
                1 => ("device.delete", format!("host-{}", i % 10)),
                2 => (
                    "entitlement.save",
                    ["private_access", "internet_access"][i % 3 % 2].to_owned(),
                ),
                _ => ("group.create", format!("Group {i}")),
            };
            let actor = match i % 3 {
                0 => ada.clone(),
                1 => ci.clone(),
                _ => forger.clone(),
            };
            let after = match i {
                3 => json!({"note": "the NeedLe, said \"so\", on two\r\nlines"}),
                7 => json!({"price": "100% off_now"}),
                _ => json!({"n": i}),
            };
            AuditEntry {
                at: start + time::Duration::minutes(i as i64),
                actor,
                action: action.to_owned(),
                target: match i {
                    3 => "Group, \"three\"\r\non two lines".to_owned(),
                    11 => "-rm -rf".to_owned(),
                    _ => target,
                },
                before: (i % 5 == 0).then(|| json!({"n": i + 1000})),
                after: Some(after),
            }
        })
        .collect()
}

async fn seed(db: &Database, tenant_id: &str, rows: &[AuditEntry]) {
    let store = match db {
        Database::Sqlite(dir) => SqlStore::open_sqlite(&dir.path().join("entitle.db"))
            .await
            .expect("store opens"),
        Database::Postgres(url) => SqlStore::connect_postgres(url, PostgresOptions::default())
            .await
            .expect("store connects"),
    };
    for chunk in rows.chunks(500) {
        store
            .append_audit_entries(tenant_id, chunk)
            .await
            .expect("seeded");
    }
    store.close().await;
}

/// Every page of a filter, concatenated, checking that no entry repeats.
async fn all_pages(app: &TestApp, t: &common::Tenant, filter: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut path = t.path(&format!("/audit?limit={limit}{filter}"));
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = app.get(&path, &t.admin).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {:?}", page.body);
        let got = page.body["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit as usize);
        items.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("paging did not end");
}

/// What the API shows of a seeded row, to compare with the model.
fn key(item: &Value) -> (String, String, String, String) {
    (
        item["at"].as_str().unwrap_or_default().to_owned(),
        item["principal"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        item["action"].as_str().unwrap_or_default().to_owned(),
        item["target"].as_str().unwrap_or_default().to_owned(),
    )
}

fn model_key(e: &AuditEntry) -> (String, String, String, String) {
    (
        e.at.format(&Rfc3339).expect("time"),
        e.actor.id.clone(),
        e.action.clone(),
        e.target.clone(),
    )
}

fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn filters_run_over_the_whole_log(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    // Whole seconds, so that the RFC 3339 text of both back ends is the same.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let start = now - time::Duration::days(10);
    let rows = seeded_rows(start);
    seed(&db, &t.id, &rows).await;
    // The model's answer: seeded rows, newest first.
    let expect = |keep: &dyn Fn(&AuditEntry) -> bool| -> Vec<(String, String, String, String)> {
        rows.iter()
            .rev()
            .filter(|e| keep(e))
            .map(model_key)
            .collect()
    };
    let at = |i: usize| {
        (start + time::Duration::minutes(i as i64))
            .format(&Rfc3339)
            .expect("time")
    };
    let cases: Vec<(String, Vec<_>)> = vec![
        (
            "&action=device.".into(),
            expect(&|e| e.action.starts_with("device.")),
        ),
        (
            "&action=device*".into(),
            expect(&|e| e.action.starts_with("device")),
        ),
        (
            "&action=device.delete".into(),
            expect(&|e| e.action == "device.delete"),
        ),
        (
            "&actor=ada%40acme".into(),
            expect(&|e| e.actor.id == "acc-ada"),
        ),
        ("&actor=tok-ci".into(), expect(&|e| e.actor.id == "tok-ci")),
        ("&target=host-3".into(), expect(&|e| e.target == "host-3")),
        (
            "&service=private_access".into(),
            expect(&|e| e.action == "entitlement.save" && e.target == "private_access"),
        ),
        (
            format!("&from={}&to={}", enc(&at(100)), enc(&at(400))),
            expect(&|e| {
                e.at >= start + time::Duration::minutes(100)
                    && e.at < start + time::Duration::minutes(400)
            }),
        ),
        // The needle is the fourth-oldest entry: far below the newest 200.
        (
            "&q=%20needle%20".into(),
            expect(&|e| {
                e.after
                    .as_ref()
                    .is_some_and(|a| a.to_string().contains("NeedLe"))
            }),
        ),
        // LIKE wildcards in the text match only themselves.
        (
            "&q=100%25%20off_".into(),
            expect(&|e| {
                e.after
                    .as_ref()
                    .is_some_and(|a| a.to_string().contains("100% off_"))
            }),
        ),
        (
            "&q=%25".into(),
            expect(&|e| {
                e.after
                    .as_ref()
                    .is_some_and(|a| a.to_string().contains('%'))
            }),
        ),
        (
            format!("&action=device.&actor=Ada&from={}", enc(&at(2_000))),
            expect(&|e| {
                e.action.starts_with("device.")
                    && e.actor.id == "acc-ada"
                    && e.at >= start + time::Duration::minutes(2_000)
            }),
        ),
        ("&target=nothing-like-it".into(), vec![]),
    ];
    for (filter, expected) in &cases {
        assert!(
            !expected.is_empty() || filter.contains("nothing"),
            "{filter}: the case should select something"
        );
        for limit in [37, 200] {
            let got: Vec<_> = all_pages(&app, &t, filter, limit)
                .await
                .iter()
                .map(key)
                .collect();
            assert_eq!(got.len(), expected.len(), "{filter} limit {limit}");
            assert_eq!(&got, expected, "{filter} limit {limit}");
        }
    }
    let needle = all_pages(&app, &t, "&q=needle", 50).await;
    assert_eq!(needle.len(), 1);
    assert_eq!(needle[0]["principal"]["id"], "acc-ada");

    // Bad input is a clear 400, never a 500.
    let long = "x".repeat(201);
    for (query, code) in [
        ("from=yesterday", "invalid_time"),
        ("to=2026-13-01T00:00:00Z", "invalid_time"),
        (
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "invalid_time_range",
        ),
        (&format!("q={long}") as &str, "filter_too_long"),
        (&format!("actor={long}"), "filter_too_long"),
        ("service=no_such_service", "unknown_service"),
        ("cursor=abc", "invalid_cursor"),
        ("cursor=-5", "invalid_cursor"),
    ] {
        let answer = app.get(&t.path(&format!("/audit?{query}")), &t.admin).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], code, "{query}");
        let export = app
            .get(&t.path(&format!("/audit/export?{query}")), &t.admin)
            .await;
        if !query.starts_with("cursor") {
            assert_eq!(export.status, StatusCode::BAD_REQUEST, "export {query}");
        }
    }
    let format = app.get(&t.path("/audit/export?format=xml"), &t.admin).await;
    assert_eq!(format.status, StatusCode::BAD_REQUEST);
    assert_eq!(format.body["error"]["code"], "invalid_format");
    // Another tenant's log is not found, filtered or not.
    let beta = app.tenant("beta").await;
    let other = app.get(&t.path("/audit?action=device."), &beta.admin).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let other = app.get(&t.path("/audit/export"), &beta.admin).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

async fn export_streams_the_filtered_view(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    seed(&db, &t.id, &seeded_rows(now - time::Duration::days(10))).await;

    for filter in [
        "action=device.",
        "actor=dev-9",
        "q=needle",
        "target=nothing-like-it",
    ] {
        let listed = all_pages(&app, &t, &format!("&{filter}"), 200).await;
        // JSON: an array of exactly the list's items.
        let response = app
            .client
            .get(format!(
                "{}{}",
                app.base,
                t.path(&format!("/audit/export?format=json&{filter}"))
            ))
            .bearer_auth(&t.admin)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let exported: Value = response.json().await.expect("a JSON array");
        assert_eq!(exported, Value::Array(listed.clone()), "json {filter}");

        // CSV: parses back (RFC 4180) to the same rows. Listed again, since
        // the JSON export's own audit entry matches a free-text filter on it.
        let listed = all_pages(&app, &t, &format!("&{filter}"), 200).await;
        let response = app
            .client
            .get(format!(
                "{}{}",
                app.base,
                t.path(&format!("/audit/export?{filter}"))
            ))
            .bearer_auth(&t.admin)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        let today = OffsetDateTime::now_utc().date();
        assert_eq!(
            response.headers()["content-disposition"],
            format!("attachment; filename=\"audit-acme-{today}.csv\"").as_str()
        );
        let text = response.text().await.expect("csv");
        let records = parse_csv(&text);
        assert_eq!(
            records[0],
            [
                "at",
                "actor",
                "actor_kind",
                "actor_id",
                "action",
                "target",
                "before",
                "after"
            ]
        );
        assert_eq!(records.len() - 1, listed.len(), "csv {filter}");
        for (record, item) in records[1..].iter().zip(&listed) {
            let cell = |field: &Value| {
                let text = field.as_str().unwrap_or_default().to_owned();
                if text.starts_with(['=', '+', '-', '@']) {
                    format!("'{text}")
                } else {
                    text
                }
            };
            let json = |field: &Value| {
                if field.is_null() {
                    String::new()
                } else {
                    field.to_string()
                }
            };
            assert_eq!(record[0], cell(&item["at"]));
            assert_eq!(record[1], cell(&item["principal"]["name"]));
            assert_eq!(record[2], cell(&item["principal"]["kind"]));
            assert_eq!(record[3], cell(&item["principal"]["id"]));
            assert_eq!(record[4], cell(&item["action"]));
            assert_eq!(record[5], cell(&item["target"]));
            assert_eq!(
                serde_json::from_str::<Value>(&record[6]).ok(),
                (!item["before"].is_null()).then(|| item["before"].clone()),
                "{}",
                json(&item["before"])
            );
            assert_eq!(
                serde_json::from_str::<Value>(&record[7]).ok(),
                (!item["after"].is_null()).then(|| item["after"].clone())
            );
        }
        if filter == "actor=dev-9" {
            // A name a spreadsheet would run as a formula is neutralised.
            assert!(records[1..].iter().all(|r| r[1].starts_with("'=HYPERLINK")));
            assert!(text.contains("\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""));
        }
        if filter == "q=needle" {
            // The needle, and the JSON export that searched for it.
            assert_eq!(records.len(), 3);
            assert_eq!(records[1][4], "audit.export");
            assert_eq!(records[2][5], "Group, \"three\"\r\non two lines");
        }
    }
    // The body is streamed (chunked, no length known up front), and a viewer,
    // who may read the log, may export it.
    let (viewer, _) = t.token(&app, "auditor", "viewer").await;
    let response = app
        .client
        .get(format!(
            "{}{}",
            app.base,
            t.path("/audit/export?format=json")
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let all: Value = response.json().await.expect("a JSON array");
    assert!(all.as_array().expect("array").len() > SEEDED);

    // The target starting with a dash is neutralised too.
    let text = app
        .client
        .get(format!(
            "{}{}",
            app.base,
            t.path("/audit/export?target=-rm%20-rf")
        ))
        .bearer_auth(&t.admin)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    assert_eq!(parse_csv(&text)[1][5], "'-rm -rf");

    // Each export is audited with the principal who asked and its filter.
    let exports = all_pages(&app, &t, "&action=audit.export", 200).await;
    assert_eq!(exports.len(), 10);
    assert_eq!(exports[0]["principal"]["kind"], "api_token");
    assert_eq!(exports[1]["principal"]["name"], "auditor");
    assert_eq!(exports[0]["target"], "csv");
    assert_eq!(exports[0]["after"]["target"], "-rm -rf");
}

/// A strict RFC 4180 reader: every field is quoted, quotes are doubled,
/// records end with CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        assert_eq!(chars.next(), Some('"'), "a field opens with a quote");
        let mut field = String::new();
        loop {
            match chars.next().expect("field closes") {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => break,
                c => field.push(c),
            }
        }
        record.push(field);
        match chars.next() {
            Some(',') => {}
            Some('\r') => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                records.push(std::mem::take(&mut record));
            }
            other => panic!("unexpected {other:?} after a field"),
        }
    }
    assert!(record.is_empty(), "the last record ends with CRLF");
    records
}

/// Entries appended while an admin pages through a filter never shift the
/// pages: they are newer than the first page, so the pages concatenate to
/// the filtered set as it was when paging began, with no repeat or gap.
async fn pages_are_stable_under_concurrent_inserts(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("time");
    let rows = seeded_rows(now - time::Duration::days(10));
    seed(&db, &t.id, &rows[..600]).await;
    let expected: Vec<_> = rows[..600]
        .iter()
        .rev()
        .filter(|e| e.action.starts_with("device."))
        .map(model_key)
        .collect();
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut more = rows[600..].chunks(20);
    loop {
        let mut path = t.path("/audit?limit=40&action=device.");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = app.get(&path, &t.admin).await;
        assert_eq!(page.status, StatusCode::OK);
        got.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(key),
        );
        // Another writer appends matching entries between two pages.
        if let Some(chunk) = more.next() {
            seed(&db, &t.id, chunk).await;
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(got, expected);
}

on_both_backends!(
    filters_run_over_the_whole_log,
    export_streams_the_filtered_view,
    pages_are_stable_under_concurrent_inserts,
);
