//! `evaluate()` per decision, without and with the rules of issue 15, built
//! with only the core (the same scenarios as `entitle bench`'s decision
//! lines, for machines where building the whole binary in release is too
//! slow): `cargo run --release -p entitle-core --example evaluate_timing [decisions]`.

#![allow(clippy::print_stdout)] // printing the figures is what an example is for

use std::collections::BTreeSet;
use std::time::Instant;

use entitle_core::{
    ActiveGrant, ClientVersion, DeviceGroupId, GroupId, NoNames, ServiceDef, Settings, Subject,
    evaluate, rollout_bucket, service,
};

fn time(label: &str, decisions: u64, def: &ServiceDef, settings: &Settings, subject: &Subject<'_>) {
    let started = Instant::now();
    let mut enabled = 0u64;
    for _ in 0..decisions {
        let decision = evaluate(
            def,
            std::hint::black_box(settings),
            std::hint::black_box(subject),
            &NoNames,
        );
        enabled += u64::from(decision.enabled);
    }
    let elapsed = started.elapsed();
    std::hint::black_box(enabled);
    println!(
        "{label}: {:.0} ns per decision ({decisions} decisions in {:.2} s)",
        elapsed.as_nanos() as f64 / decisions as f64,
        elapsed.as_secs_f64()
    );
}

fn main() {
    let decisions: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let Ok(zpa) = service("private_access") else {
        return;
    };
    let user_groups: BTreeSet<GroupId> = (0..8).map(|i| GroupId(format!("group-{i}"))).collect();
    let device_groups: BTreeSet<DeviceGroupId> =
        (0..3).map(|i| DeviceGroupId(format!("dg-{i}"))).collect();
    let settings = Settings {
        user_groups: [GroupId("group-7".into()), GroupId("other".into())].into(),
        device_groups: [DeviceGroupId("dg-2".into())].into(),
        ..Settings::default()
    };
    let subject = Subject {
        user_name: "ada@acme.example",
        user_id: "3f1c7a52-0d55-4c8e-9a57-6c2b8e1f4d10",
        device_id: "9b0e4f6a-2c71-4d3b-8f5e-1a7d2c9e6b42",
        tenant_id: "5e2d8c1b-7a94-4f06-b3c8-0d1e6f2a9b57",
        user_active: true,
        user_groups: &user_groups,
        device_groups: &device_groups,
        client_version: ClientVersion::new([4, 3, 0, 120], 4),
        pending_approval: false,
        grants: &[],
    };
    time("group match", decisions, zpa, &settings, &subject);

    // Two excluded user groups and one device group the subject is not in,
    // a 50 % rollout and 10 active grants, none for this service and device.
    let with_rules = Settings {
        exclude_user_groups: [GroupId("contractors".into()), GroupId("interns".into())].into(),
        exclude_device_groups: [DeviceGroupId("kiosks".into())].into(),
        rollout_percent: 50,
        ..settings
    };
    let grants: Vec<ActiveGrant> = (0..10)
        .map(|i| ActiveGrant {
            id: format!("grant-{i}"),
            service_id: if i % 2 == 0 {
                "internet_access"
            } else {
                "private_access"
            }
            .to_owned(),
            device_id: Some(format!("other-device-{i}")),
            ends_at: "2026-12-01T18:00:00Z".to_owned(),
            overrides_exclusions: false,
        })
        .collect();
    // One device inside the rollout (the full group explanation is built)
    // and one held back.
    let device = |inside: bool| {
        (0..)
            .map(|i| format!("9b0e4f6a-2c71-4d3b-8f5e-{i:012}"))
            .find(|d| (rollout_bucket(subject.tenant_id, zpa.id, d) < 50) == inside)
            .unwrap_or_default()
    };
    for (inside, label) in [
        (true, "exclusions, 10 grants, 50 % rollout, device inside"),
        (
            false,
            "exclusions, 10 grants, 50 % rollout, device held back",
        ),
    ] {
        let device_id = device(inside);
        let busy = Subject {
            grants: &grants,
            device_id: &device_id,
            ..subject.clone()
        };
        time(label, decisions, zpa, &with_rules, &busy);
    }
}
