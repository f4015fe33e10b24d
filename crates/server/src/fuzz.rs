//! Property-based fuzz targets for what strangers send the edge, run by
//! `cargo test` for proptest's default number of cases (fast enough for CI)
//! and for as many as `PROPTEST_CASES` asks in a longer campaign, e.g.
//! `PROPTEST_CASES=2000000 cargo test -p entitle-server --lib fuzz`.
//!
//! The lane's request head has its own targets beside its parser (`lane.rs`).
//!
//! A campaign of a fixed duration, which reports how many cases it ran:
//! `FUZZ_SECONDS=600 cargo test -p entitle-server --lib -- --ignored --nocapture campaign`.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::extract::json_from_slice;
use crate::wire::ReportJson;

/// Runs the strategies in turn, a few hundred cases at a time with a fresh
/// seed each, until `FUZZ_SECONDS` (default 10) have passed; panics with the
/// smallest failing input found. Returns the number of cases run.
pub(crate) fn campaign(
    name: &str,
    strategies: &[BoxedStrategy<Vec<u8>>],
    check: fn(&[u8]) -> Result<(), TestCaseError>,
) -> u64 {
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let per_round = 200;
    let mut cases = 0u64;
    while std::time::Instant::now() < deadline {
        for strategy in strategies {
            let mut runner = TestRunner::new(Config {
                cases: per_round,
                failure_persistence: None,
                ..Config::default()
            });
            if let Err(failure) = runner.run(strategy, |input| check(&input)) {
                panic!("{name}: {failure}");
            }
            cases += u64::from(per_round);
        }
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{name}: {cases} cases in {seconds} s, no failure");
    }
    cases
}

/// A sync body, decoded and parsed as the sync handler and the lane do:
/// never a panic, and every refusal a 4xx.
fn check_sync_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    let parsed = json_from_slice::<ReportJson>(bytes).and_then(ReportJson::parse);
    if let Err(error) = parsed {
        prop_assert!(
            error.status().is_client_error(),
            "{} for {:?}",
            error.status(),
            String::from_utf8_lossy(bytes)
        );
    }
    Ok(())
}

/// Any JSON value, a few levels deep, with strings that include control
/// characters, very long text and odd numbers.
fn any_json() -> impl Strategy<Value = Value> {
    any_leaf().prop_recursive(2, 16, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON scalar.
fn any_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        "[\\x00-\\x1f]{1,4}".prop_map(Value::String),
        (0usize..2000).prop_map(|n| Value::String("x".repeat(n))),
    ]
}

/// Reports that are nearly right, so that the checks past the JSON layer run.
fn report_like() -> impl Strategy<Value = Value> {
    let field = |known: Vec<&'static str>| {
        prop_oneof![
            prop::sample::select(known).prop_map(|s| json!(s)),
            any_json(),
        ]
    };
    (
        field(vec!["ada-mbp", "h", "", " ", "a\u{0}b"]),
        field(vec!["macos", "windows", "linux", "ios", "android", "beos"]),
        field(vec![
            "4.0",
            "3.9.0.221",
            "1",
            "1.2.3.4.5",
            "v2",
            "99999999999999999999",
        ]),
        field(vec!["corporate", "personal", "stolen"]),
        prop::collection::btree_map("[a-z_]{1,8}|.{0,20}", any_leaf(), 0..70),
        prop::option::of(any_json()),
    )
        .prop_map(
            |(hostname, os, client_version, ownership, posture, extra)| {
                let mut report = json!({
                    "hostname": hostname, "os": os, "client_version": client_version,
                    "ownership": ownership, "posture": Value::Object(posture.into_iter().collect()),
                });
                if let Some(extra) = extra {
                    report["extra"] = extra;
                }
                report
            },
        )
}

/// The sync body's strategies as bytes, for a campaign.
fn sync_body_inputs() -> Vec<BoxedStrategy<Vec<u8>>> {
    vec![
        prop::collection::vec(any::<u8>(), 0..512).boxed(),
        any_json().prop_map(|v| v.to_string().into_bytes()).boxed(),
        report_like()
            .prop_map(|v| v.to_string().into_bytes())
            .boxed(),
        (report_like(), any::<prop::sample::Index>())
            .prop_map(|(v, cut)| {
                let text = v.to_string().into_bytes();
                let cut = cut.index(text.len() + 1);
                text[..cut].to_vec()
            })
            .boxed(),
    ]
}

/// The sync body for `FUZZ_SECONDS`.
#[test]
#[ignore = "a campaign of FUZZ_SECONDS; run by hand"]
fn sync_body_campaign() {
    campaign("sync body", &sync_body_inputs(), check_sync_body);
}

proptest! {
    /// Raw bytes, including truncated and invalid UTF-8.
    #[test]
    fn sync_body_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_sync_body(&bytes)?;
    }

    /// Any JSON document.
    #[test]
    fn sync_body_any_json(value in any_json()) {
        check_sync_body(value.to_string().as_bytes())?;
    }

    /// Nearly valid reports, whole and cut short.
    #[test]
    fn sync_body_report_like(report in report_like(), cut in any::<prop::sample::Index>()) {
        let text = report.to_string();
        check_sync_body(text.as_bytes())?;
        let cut = cut.index(text.len() + 1);
        check_sync_body(&text.as_bytes()[..cut])?;
    }
}
