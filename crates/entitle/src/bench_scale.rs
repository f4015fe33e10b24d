//! `entitle bench --scale --devices N --users M`: one tenant of N devices and
//! M users (the demo tenant, the rest seeded in bulk), served by the real
//! server as a child process. Reports the enrollment rate over HTTP
//! (`--http-enrollments` of the N enroll over HTTP with concurrent clients),
//! the server's resident memory, the snapshot rebuild after a burst of
//! `--scim-burst` SCIM writes (and where its time goes: the store read and
//! the build, timed in this process), the entitlement preview over every
//! device, and one page of devices filtered by service state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use entitle_server::TenantSnapshot;
use entitle_store::Store;
use serde_json::{Value, json};

use super::target::{ChildServer, device_report, prepare, sync_etag};
use super::{BenchArgs, report};
use crate::demo;

/// Concurrent HTTP clients of the enrollment and SCIM phases.
const CLIENTS: usize = 32;

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let devices = args.devices;
    let users = (args.users as i64).max(1);
    let over_http = args.http_enrollments.min(devices);
    report(
        "tenant",
        format!("{devices} devices ({over_http} enrolled over HTTP), {users} users"),
    );
    let prepared = prepare(
        args.database_url.as_deref(),
        dir.path(),
        users,
        (devices - over_http) as i64,
    )
    .await?;
    let server = ChildServer::start(
        &prepared.url,
        &["--enrollments-per-minute", "100000000"],
        None,
    )
    .await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS * 2)
        .build()?;
    report("server RSS, started", mib(server.rss()));

    // The first admin read loads the tenant's snapshot.
    let started = Instant::now();
    client
        .get(format!(
            "{}/api/v1/tenants/acme/devices?limit=1",
            server.base
        ))
        .bearer_auth(demo::ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?;
    report(
        "first snapshot load (first request)",
        format!("{:.2} s", started.elapsed().as_secs_f64()),
    );
    report("server RSS, snapshot loaded", mib(server.rss()));

    let (enrolled, rate) = enroll_many(&client, &server.base, over_http, users).await?;
    report("enrollment over HTTP", rate);
    report("server RSS, after enrollments", mib(server.rss()));

    // One device to sync with after the burst.
    let token = enrolled.context("no device enrolled over HTTP")?;
    let body = device_report(0);
    let etag = sync_etag(&client, &server.base, &token, &body).await?;
    let before = rebuilds(&client, &server.base).await;
    let burst = scim_burst(&client, &server.base, args.scim_burst).await?;
    report(&format!("SCIM burst ({} writes)", args.scim_burst), burst);
    let started = Instant::now();
    let answer = client
        .post(format!("{}/agent/v1/sync", server.base))
        .bearer_auth(&token)
        .header("If-None-Match", &etag)
        .json(&body)
        .send()
        .await?;
    let status = answer.status();
    report(
        "first sync after the burst (includes a rebuild)",
        format!("{:.2} s ({status})", started.elapsed().as_secs_f64()),
    );
    // Let the debounced refresh of held long-polls finish, then read the histogram.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rebuilds(&client, &server.base).await;
    let count = after.1 - before.1;
    report(
        "snapshot rebuilds during and after the burst",
        if count > 0.0 {
            format!(
                "{count:.0}, mean {:.2} s (entitle_snapshot_rebuild_seconds)",
                (after.0 - before.0) / count
            )
        } else {
            "none".to_owned()
        },
    );
    report("server RSS, after the burst", mib(server.rss()));
    where_rebuild_time_goes(&prepared.database, &prepared.tenant_id).await?;

    for (name, proposed) in [
        (
            "Private Applications, Engineering only",
            json!({"enabled_by_default": false, "user_groups": [group_id(&prepared, "Engineering").await?], "device_groups": [], "logout_on_enable": false}),
        ),
        (
            "Private Applications, on for everyone",
            json!({"enabled_by_default": true, "user_groups": [], "device_groups": [], "logout_on_enable": false}),
        ),
    ] {
        let mut times = Vec::new();
        let mut summary = Value::Null;
        // The first preview after start reads every device into memory;
        // later ones read only the devices changed since.
        for _ in 0..4 {
            let started = Instant::now();
            let response = client
                .post(format!(
                    "{}/api/v1/tenants/acme/entitlements/private_access/preview",
                    server.base
                ))
                .bearer_auth(demo::ADMIN_TOKEN)
                .json(&proposed)
                .send()
                .await?;
            let status = response.status();
            summary = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("preview answered {status}: {summary}");
            }
            times.push(started.elapsed());
        }
        let first = times.remove(0);
        times.sort();
        report(
            &format!("preview over all devices: {name}"),
            format!(
                "first {:.2} s, then median {:.2} s, max {:.2} s (gaining {}, losing {})",
                first.as_secs_f64(),
                times[1].as_secs_f64(),
                times[2].as_secs_f64(),
                summary["gaining"]["devices"],
                summary["losing"]["devices"],
            ),
        );
    }
    report("server RSS, after previews", mib(server.rss()));
    preview_after_a_directory_change(&client, &server.base).await?;

    // Internet & SaaS is on for every device; Private Applications is off for
    // most (seeded devices report no disk encryption) and on for few.
    for (name, query) in [
        (
            "Internet & SaaS on (all)",
            "&service=internet_access&state=on",
        ),
        (
            "Private Applications off (most)",
            "&service=private_access&state=off",
        ),
        (
            "Private Applications on (few)",
            "&service=private_access&state=on",
        ),
    ] {
        let list = format!(
            "{}/api/v1/tenants/acme/devices?limit=50{query}",
            server.base
        );
        let mut times = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let url = match &cursor {
                Some(c) => format!("{list}&cursor={c}"),
                None => list.clone(),
            };
            let started = Instant::now();
            let page: Value = client
                .get(&url)
                .bearer_auth(demo::ADMIN_TOKEN)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(started.elapsed());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        // The first page decides every device's state once for the
        // snapshot; the pages after it reuse those states.
        let first = times[0];
        times.sort();
        report(
            &format!("devices page of 50: {name}"),
            format!(
                "first {:.1} ms, median {:.1} ms, max {:.1} ms ({} consecutive pages)",
                first.as_secs_f64() * 1e3,
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
                times.len()
            ),
        );
    }
    report("server RSS, at the end", mib(server.rss()));
    report(
        "server CPU, whole run",
        format!("{:.0} s", server.cpu_seconds()),
    );
    drop(server);
    Ok(())
}

/// One directory write rebuilds the snapshot, so the next preview finds
/// every device's user again: timed after the rebuild (a device listing waits
/// for it), so that the figure is the preview's own.
async fn preview_after_a_directory_change(
    client: &reqwest::Client,
    base: &str,
) -> anyhow::Result<()> {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "after-previews@bench.test", "active": true,
    });
    client
        .post(format!("{base}/scim/v2/acme/Users"))
        .bearer_auth(demo::SCIM_TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await?
        .error_for_status()?;
    client
        .get(format!("{base}/api/v1/tenants/acme/devices?limit=1"))
        .bearer_auth(demo::ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?;
    let started = Instant::now();
    client
        .post(format!(
            "{base}/api/v1/tenants/acme/entitlements/private_access/preview"
        ))
        .bearer_auth(demo::ADMIN_TOKEN)
        .json(&json!({"enabled_by_default": true, "user_groups": [], "device_groups": [], "logout_on_enable": false}))
        .send()
        .await?
        .error_for_status()?;
    report(
        "preview after one directory write",
        format!(
            "{:.2} s (snapshot rebuilt; every device's user found again)",
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

async fn group_id(prepared: &super::target::Prepared, name: &str) -> anyhow::Result<String> {
    let store = prepared.database.open(false).await?;
    let page = store
        .search_groups(&prepared.tenant_id, name, 10, None)
        .await?;
    page.items
        .into_iter()
        .find(|g| g.display_name == name)
        .map(|g| g.id)
        .context("demo group")
}

/// Enrolls `count` devices over HTTP with `CLIENTS` concurrent clients, each
/// for one of the seeded users; answers a token and the rate.
async fn enroll_many(
    client: &reqwest::Client,
    base: &str,
    count: usize,
    users: i64,
) -> anyhow::Result<(Option<String>, String)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, next, base) = (client.clone(), next.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut token = None;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, anyhow::Error>((latencies, token));
                }
                let mut device = device_report(index);
                device["hostname"] = json!(format!("http-{index}"));
                let body = json!({
                    "enrollment_key": demo::ENROLLMENT_KEY,
                    "user_name": format!("user{}@bench.test", index as i64 % users),
                    "device": device,
                });
                let sent = Instant::now();
                let response = client
                    .post(format!("{base}/agent/v1/enroll"))
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                if !status.is_success() {
                    bail!("enrollment {index} answered {status}: {answer}");
                }
                latencies.push(sent.elapsed());
                if index == 0 {
                    token = answer["device_token"].as_str().map(str::to_owned);
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut token = None;
    for worker in workers {
        let (mut part, found) = worker.await??;
        latencies.append(&mut part);
        token = token.or(found);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Ok((
        token,
        format!(
            "{count} in {elapsed:.1} s: {:.0} enrollments/s, p99 {:.1} ms ({CLIENTS} clients)",
            count as f64 / elapsed.max(1e-9),
            p99.as_secs_f64() * 1e3
        ),
    ))
}

/// `entitle_snapshot_rebuild_seconds`: (sum, count).
async fn rebuilds(client: &reqwest::Client, base: &str) -> (f64, f64) {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return (0.0, 0.0);
    };
    let text = response.text().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("entitle_snapshot_rebuild_seconds_sum "),
        value("entitle_snapshot_rebuild_seconds_count "),
    )
}

/// `count` SCIM writes with `CLIENTS` concurrent clients: new users, as an
/// identity provider's incremental sync sends them.
async fn scim_burst(client: &reqwest::Client, base: &str, count: usize) -> anyhow::Result<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS.min(10) {
        let (client, next, base) = (client.clone(), next.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("burst{index}@bench.test"), "externalId": format!("burst-{index}"),
                    "active": true,
                });
                let response = client
                    .post(format!("{base}/scim/v2/acme/Users"))
                    .bearer_auth(demo::SCIM_TOKEN)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = response.status();
                if !status.is_success() {
                    bail!(
                        "SCIM write {index} answered {status}: {}",
                        response.text().await.unwrap_or_default()
                    );
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "{count} in {elapsed:.2} s ({:.0} writes/s)",
        count as f64 / elapsed.max(1e-9)
    ))
}

/// Times, in this process, the two halves of a rebuild: the store read of the
/// tenant's data and `TenantSnapshot::build`.
async fn where_rebuild_time_goes(
    database: &crate::serve::Database,
    tenant_id: &str,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = database.open(false).await?;
    let started = Instant::now();
    let data = store.tenant_data(tenant_id).await?;
    let read = started.elapsed();
    let again = data.clone();
    let started = Instant::now();
    let snapshot = TenantSnapshot::build(data);
    let built = started.elapsed();
    report(
        "rebuild, timed in the bench process",
        format!(
            "store read {:.2} s + build {:.2} s",
            read.as_secs_f64(),
            built.as_secs_f64()
        ),
    );
    // What a rebuild adds when long-polls are held: each held user is
    // compared in the old and the new snapshot, to wake only those concerned.
    let user_ids: Vec<String> = again.users.iter().map(|u| u.id.clone()).collect();
    let rebuilt = TenantSnapshot::build(again);
    let started = Instant::now();
    let concerned = user_ids
        .iter()
        .filter(|id| snapshot.concerns(&rebuilt, id))
        .count();
    let compared = started.elapsed();
    report(
        "rebuild, comparison per held user (held long-polls)",
        format!(
            "{:.0} ns ({} users compared in {:.2} s, {concerned} concerned)",
            compared.as_secs_f64() * 1e9 / user_ids.len().max(1) as f64,
            user_ids.len(),
            compared.as_secs_f64(),
        ),
    );
    Ok(())
}
