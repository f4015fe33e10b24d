//! `entitle demo`: a realistic small company, seeded on a fresh SQLite file, so
//! that every decision reason can be seen and tried at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use entitle_core::{
    ClientVersion, DeviceGroup, DeviceGroupId, DeviceReport, GroupId, Os, Ownership, PostureOp,
    PostureRequirement, PostureValue, Settings, service,
};
use entitle_server::{Server, ServerConfig};
use entitle_store::{
    Actor, NewAccount, NewTenant, NewUser, Role, SaveRequest, Store, StoreError, TokenGrant,
    secrets,
};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::serve::{LogFormat, bootstrap, init_logging, open_store, shutdown_signal};

/// Flags of `entitle demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "ENTITLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Keep the demo's data here (default: a new temporary directory, removed on exit).
    #[arg(long, env = "ENTITLE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "ENTITLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Sign-in through an identity provider (the demo's public URL is its listen address).
    #[command(flatten)]
    pub oidc: crate::oidc_args::OidcArgs,
}

/// The demo's well-known credentials. They are printed on start and only ever
/// valid on a demo's own data directory.
pub const SUPER_ADMIN_TOKEN: &str = "demo-super-admin";
/// Token of the acme tenant's administrator.
pub const ADMIN_TOKEN: &str = "demo-acme-admin";
/// Token of the acme tenant's read-only viewer.
pub const VIEWER_TOKEN: &str = "demo-acme-viewer";
/// Enrollment key of the acme tenant.
pub const ENROLLMENT_KEY: &str = "demo-acme-enroll";
/// SCIM token of the acme tenant.
pub const SCIM_TOKEN: &str = "demo-acme-scim";
/// Password of the demo's portal accounts.
pub const PORTAL_PASSWORD: &str = "entitle-demo";
/// The acme administrator's portal sign-in.
pub const ADMIN_EMAIL: &str = "admin@acme.example";
/// The acme viewer's portal sign-in.
pub const VIEWER_EMAIL: &str = "viewer@acme.example";
/// Device token of ada's corporate MacBook.
pub const ADA_LAPTOP_TOKEN: &str = "demo-device-ada-laptop";

/// Seeds the demo and serves it until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("entitle-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let store = open_store(&data_dir, None).await?;
    bootstrap(&*store, Some(SUPER_ADMIN_TOKEN)).await?;
    let seeded = seed(&*store).await?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (use --listen 127.0.0.1:PORT)",
            args.listen
        )
    })?;
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        // The demo's tokens are fixed and printed: anyone who can reach the
        // address is a super admin.
        tracing::warn!(%address, "THE DEMO IS LISTENING ON A NON-LOOPBACK ADDRESS: its well-known super_admin token opens it to anyone who can reach it; use --listen 127.0.0.1:PORT");
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "\nWARNING: the demo listens on {address}, which is not a loopback address.\n\
                 Its super_admin token is printed below and the same in every demo:\n\
                 anyone who can reach {address} can administer it. Use --listen 127.0.0.1:PORT.\n"
            );
        }
    }
    let public_url = format!("http://{address}");
    let config = ServerConfig {
        oidc: args.oidc.build(Some(&public_url))?,
        ..ServerConfig::default()
    };
    print_welcome(address, &data_dir, seeded);
    Server::new(store, config)
        .run(listener, shutdown_signal())
        .await?;
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_welcome(address: SocketAddr, data_dir: &std::path::Path, seeded: bool) {
    let url = format!("http://{address}");
    let state = if seeded {
        "seeded tenant acme"
    } else {
        "tenant acme already seeded"
    };
    println!(
        "entitle demo is running ({state}; data in {dir})

  portal          {url}/   sign in as {ADMIN_EMAIL} (or {VIEWER_EMAIL}), password {PORTAL_PASSWORD}
  API             {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)
  tenant          acme
  admin token     {ADMIN_TOKEN}
  viewer token    {VIEWER_TOKEN}
  super admin     {SUPER_ADMIN_TOKEN}
  enrollment key  {ENROLLMENT_KEY}
  SCIM            {url}/scim/v2/acme/   bearer token {SCIM_TOKEN}
  device token    {ADA_LAPTOP_TOKEN}   (ada's MacBook, for /agent/v1/sync)

Try it in another terminal:
  export ENTITLE_SERVER={url} ENTITLE_TOKEN={ADMIN_TOKEN} ENTITLE_TENANT=acme
  entitle entitlements show
  entitle devices list

Press Ctrl-C to stop.",
        dir = data_dir.display()
    );
}

/// The company: groups with nesting, then users in them.
const GROUPS: &[(&str, &[&str])] = &[
    ("Platform", &[]),
    ("Mobile", &[]),
    ("Engineering", &["Platform", "Mobile"]),
    ("Finance", &[]),
    ("Sales", &[]),
    ("Contractors", &[]),
    ("Executives", &[]),
    ("ZDX Pilot", &[]),
];

/// Users: name, groups, laptop (os, ownership, client version, encrypted), phone client version.
type Person = (
    &'static str,
    &'static [&'static str],
    (Os, Ownership, &'static str, bool),
    Option<&'static str>,
);

const PEOPLE: &[Person] = &[
    (
        "ada",
        &["Platform", "ZDX Pilot"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "grace",
        &["Platform"],
        (Os::Linux, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "linus",
        &["Platform"],
        (Os::Linux, Ownership::Corporate, "4.2.1", true),
        Some("4.1.0"),
    ),
    (
        "ken",
        &["Platform"],
        (Os::Linux, Ownership::Corporate, "1.2.3", true),
        None,
    ),
    (
        "barbara",
        &["Platform", "ZDX Pilot"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "dennis",
        &["Platform"],
        (Os::Windows, Ownership::Corporate, "3.8.9", true),
        None,
    ),
    (
        "margaret",
        &["Mobile"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "alan",
        &["Mobile"],
        (Os::Macos, Ownership::Personal, "4.3.0.120", false),
        Some("4.2.0"),
    ),
    (
        "katherine",
        &["Mobile"],
        (Os::Macos, Ownership::Corporate, "2.2.0", true),
        None,
    ),
    (
        "tim",
        &["Mobile", "ZDX Pilot"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", false),
        Some("4.3.0.120"),
    ),
    (
        "radia",
        &["Mobile"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "bjarne",
        &["Engineering"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "guido",
        &["Engineering"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        Some("3.9.0.221"),
    ),
    (
        "anders",
        &["Engineering"],
        (Os::Windows, Ownership::Personal, "4.3.0.120", true),
        None,
    ),
    (
        "john",
        &["Engineering"],
        (Os::Linux, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "frances",
        &["Finance"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "edsger",
        &["Finance"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "shafi",
        &["Finance"],
        (Os::Windows, Ownership::Corporate, "1.2.3", true),
        None,
    ),
    (
        "leslie",
        &["Finance", "ZDX Pilot"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "donald",
        &["Finance"],
        (Os::Windows, Ownership::Personal, "4.3.0.120", false),
        None,
    ),
    (
        "sophie",
        &["Finance"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "hedy",
        &["Sales"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "ivan",
        &["Sales"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "jean",
        &["Sales"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "karen",
        &["Sales"],
        (Os::Windows, Ownership::Corporate, "3.8.9", true),
        None,
    ),
    (
        "lynn",
        &["Sales"],
        (Os::Macos, Ownership::Personal, "4.3.0.120", false),
        Some("4.3.0.120"),
    ),
    (
        "marvin",
        &["Sales"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "niklaus",
        &["Sales", "ZDX Pilot"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "ole",
        &["Sales"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "peter",
        &["Contractors"],
        (Os::Windows, Ownership::Personal, "4.3.0.120", false),
        None,
    ),
    (
        "quentin",
        &["Contractors"],
        (Os::Macos, Ownership::Personal, "4.3.0.120", true),
        None,
    ),
    (
        "rasmus",
        &["Contractors"],
        (Os::Linux, Ownership::Personal, "4.2.1", true),
        None,
    ),
    (
        "steve",
        &["Contractors"],
        (Os::Windows, Ownership::Personal, "2.2.0", false),
        None,
    ),
    (
        "ursula",
        &["Executives"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "vint",
        &["Executives"],
        (Os::Macos, Ownership::Corporate, "4.3.0.120", true),
        Some("4.3.0.120"),
    ),
    (
        "whitfield",
        &["Executives"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "xavier",
        &[],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "yukihiro",
        &[],
        (Os::Linux, Ownership::Personal, "4.3.0.120", true),
        None,
    ),
    (
        "zuse",
        &[],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
    (
        "mallory",
        &["Engineering"],
        (Os::Windows, Ownership::Corporate, "4.3.0.120", true),
        None,
    ),
];

/// The user who has left: deactivated in the directory, device still enrolled.
const DEPARTED: &str = "mallory";

const DOMAIN: &str = "acme.example";

/// Seeds tenant acme unless it exists; returns whether it seeded.
pub async fn seed(store: &dyn Store) -> anyhow::Result<bool> {
    match store.tenant("acme").await {
        Ok(_) => return Ok(false),
        Err(StoreError::NotFound { .. }) => {}
        Err(other) => return Err(other.into()),
    }
    let actor = &Actor::system();
    let tenant = store
        .create_tenant(
            NewTenant {
                name: "acme".into(),
                created_at: OffsetDateTime::now_utc(),
                enrollment_key_hash: secrets::hash_secret(ENROLLMENT_KEY),
                scim_token_hash: secrets::hash_secret(SCIM_TOKEN),
            },
            actor,
        )
        .await?;
    let t = tenant.id.as_str();
    for (token, role, name) in [
        (ADMIN_TOKEN, Role::Admin, "demo-admin"),
        (VIEWER_TOKEN, Role::Viewer, "demo-viewer"),
    ] {
        let grant = TokenGrant {
            role,
            tenant_id: Some(tenant.id.clone()),
            name: name.into(),
        };
        store
            .create_api_token(&secrets::hash_secret(token), &grant, actor)
            .await?;
    }

    for (email, role) in [(ADMIN_EMAIL, Role::Admin), (VIEWER_EMAIL, Role::Viewer)] {
        let account = NewAccount {
            tenant_id: Some(tenant.id.clone()),
            email: email.into(),
            password_hash: entitle_server::password::hash(PORTAL_PASSWORD)?,
            role,
        };
        store.create_account(account, actor).await?;
    }

    let mut group_ids = std::collections::HashMap::new();
    for (name, nested) in GROUPS {
        let members: Vec<String> = nested
            .iter()
            .filter_map(|n| group_ids.get(n).cloned())
            .collect();
        let group = store.create_group(t, name, &members, actor).await?;
        group_ids.insert(*name, group.id);
    }

    let laptops = device_group(
        store,
        t,
        "Corporate laptops",
        &[Os::Windows, Os::Macos, Os::Linux],
        &[Ownership::Corporate],
        vec![PostureRequirement::new(
            "disk_encrypted",
            PostureOp::Eq,
            PostureValue::Bool(true),
        )?],
    )
    .await?;
    device_group(store, t, "Phones", &[Os::Ios, Os::Android], &[], vec![]).await?;
    device_group(
        store,
        t,
        "Current macOS",
        &[Os::Macos],
        &[],
        vec![PostureRequirement::new(
            "os_version",
            PostureOp::Gte,
            PostureValue::Text("14.0".into()),
        )?],
    )
    .await?;

    let now = OffsetDateTime::now_utc();
    for (index, (name, groups, laptop, phone)) in PEOPLE.iter().enumerate() {
        let user_name = format!("{name}@{DOMAIN}");
        let groups = groups
            .iter()
            .filter_map(|g| group_ids.get(g).cloned())
            .collect();
        let user = store
            .create_user(
                t,
                NewUser {
                    user_name: user_name.clone(),
                    display_name: Some(capitalised(name)),
                    groups,
                },
                actor,
            )
            .await?;
        let (os, ownership, version, encrypted) = *laptop;
        let kind = if os == Os::Macos { "mbp" } else { "laptop" };
        let report = DeviceReport {
            hostname: format!("{name}-{kind}"),
            os,
            client_version: ClientVersion::parse(version)?,
            ownership,
            posture: [
                ("disk_encrypted".to_owned(), PostureValue::Bool(encrypted)),
                (
                    "os_version".to_owned(),
                    PostureValue::Text(if os == Os::Macos { "14.5" } else { "10.0" }.into()),
                ),
            ]
            .into(),
        };
        let token = if *name == "ada" {
            ADA_LAPTOP_TOKEN.to_owned()
        } else {
            secrets::new_secret("ent_device")
        };
        store
            .enroll_device(t, &user, &secrets::hash_secret(&token), &report, now, None)
            .await?;
        if let Some(version) = phone {
            let os = if index % 2 == 0 { Os::Ios } else { Os::Android };
            let report = DeviceReport {
                hostname: format!("{name}-phone"),
                os,
                client_version: ClientVersion::parse(version)?,
                ownership: Ownership::Personal,
                posture: [("os_version".to_owned(), PostureValue::Text("17.4".into()))].into(),
            };
            store
                .enroll_device(
                    t,
                    &user,
                    &secrets::hash_secret(&secrets::new_secret("ent_device")),
                    &report,
                    now,
                    None,
                )
                .await?;
        }
        if *name == DEPARTED {
            store
                .set_user_active(t, &user.id, false, &Actor::directory())
                .await?;
        }
    }

    // Private Applications: Engineering and Finance, on corporate encrypted laptops.
    let group = |name: &str| {
        group_ids
            .get(name)
            .cloned()
            .map(GroupId)
            .context("seeded group")
    };
    let zpa = Settings {
        enabled_by_default: false,
        user_groups: [group("Engineering")?, group("Finance")?].into(),
        device_groups: [laptops].into(),
        ..Settings::default()
    };
    // Internet & SaaS stays on for everyone; Digital Experience Monitoring is off
    // with no group yet, waiting for its pilot.
    let zdx = Settings::default();
    for (service_id, settings) in [("private_access", zpa), ("digital_experience", zdx)] {
        let request = SaveRequest {
            service: service(service_id)?,
            expected_version: None,
            settings,
            actor: Actor::system(),
            action: "entitlement.save",
            check_default_rule: true,
            restored_from: None,
        };
        store.save_settings(t, request).await?;
    }
    Ok(true)
}

async fn device_group(
    store: &dyn Store,
    tenant_id: &str,
    name: &str,
    os: &[Os],
    ownership: &[Ownership],
    posture: Vec<PostureRequirement>,
) -> anyhow::Result<DeviceGroupId> {
    let group = DeviceGroup {
        id: DeviceGroupId(String::new()),
        name: name.into(),
        os: os.iter().copied().collect(),
        ownership: ownership.iter().copied().collect(),
        posture,
    };
    Ok(store
        .create_device_group(tenant_id, group, &Actor::system())
        .await?
        .id)
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
