//! The services entitle controls, as one table of data.

use crate::ClientVersion;

/// How a client older than a service's selective-entitlement minimum behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyBehaviour {
    /// The old client runs the service whatever the settings say.
    AlwaysEnabled,
    /// The old client honours only "Enabled by Default", not groups.
    FollowsEnabledByDefault,
}

/// One row of the services table.
#[derive(Debug)]
pub struct ServiceDef {
    /// Stable id used by the API, the CLI and the database.
    pub id: &'static str,
    /// Name shown to administrators.
    pub display_name: &'static str,
    /// Short product name (ZIA, ZPA, ZDX).
    pub short: &'static str,
    /// Label of the "Enabled by Default" toggle in the portal.
    pub enabled_by_default_label: &'static str,
    /// First client version that honours selective entitlement.
    pub min_version: ClientVersion,
    /// What an older client does instead.
    pub legacy: LegacyBehaviour,
    /// `enabled_by_default` for a tenant created before this Unix time, if the
    /// default depends on the tenant's age; `None` uses `default_enabled` always.
    pub enabled_for_tenants_created_before: Option<i64>,
    /// `enabled_by_default` of a new tenant when it does not depend on its age.
    pub default_enabled: bool,
}

/// 2017-07-01T00:00:00Z: tenants older than this keep Private Applications on for everyone.
const ZPA_SELECTIVE_ERA_STARTS: i64 = 1_498_867_200;

/// Every service, in display order. Adding a service is one more row here.
pub static SERVICES: &[ServiceDef] = &[
    ServiceDef {
        id: "internet_access",
        display_name: "Internet & SaaS",
        short: "ZIA",
        enabled_by_default_label: "ZIA Enabled by Default",
        min_version: ClientVersion::new([3, 9, 0, 0], 2),
        legacy: LegacyBehaviour::AlwaysEnabled,
        enabled_for_tenants_created_before: None,
        default_enabled: true,
    },
    ServiceDef {
        id: "private_access",
        display_name: "Private Applications",
        short: "ZPA",
        enabled_by_default_label: "ZPA Enabled by Default for User Tunnel",
        min_version: ClientVersion::new([1, 2, 4, 0], 3),
        legacy: LegacyBehaviour::AlwaysEnabled,
        enabled_for_tenants_created_before: Some(ZPA_SELECTIVE_ERA_STARTS),
        default_enabled: false,
    },
    ServiceDef {
        id: "digital_experience",
        display_name: "Digital Experience Monitoring",
        short: "ZDX",
        enabled_by_default_label: "ZDX Enabled by Default",
        min_version: ClientVersion::new([2, 2, 1, 0], 3),
        legacy: LegacyBehaviour::FollowsEnabledByDefault,
        enabled_for_tenants_created_before: None,
        default_enabled: true,
    },
];

/// A service id that is not in [`SERVICES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {0:?}; known services: {known}", known = known_ids())]
pub struct UnknownService(pub String);

/// Looks a service up by its id.
pub fn service(id: &str) -> Result<&'static ServiceDef, UnknownService> {
    SERVICES
        .iter()
        .find(|s| s.id == id)
        .ok_or_else(|| UnknownService(id.to_owned()))
}

fn known_ids() -> String {
    SERVICES.iter().map(|s| s.id).collect::<Vec<_>>().join(", ")
}

impl ServiceDef {
    /// `enabled_by_default` for a new tenant created at `tenant_created_unix`.
    pub fn default_enabled_for(&self, tenant_created_unix: i64) -> bool {
        match self.enabled_for_tenants_created_before {
            Some(cutoff) => tenant_created_unix < cutoff,
            None => self.default_enabled,
        }
    }
}

impl PartialEq for ServiceDef {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for ServiceDef {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_lookups_work() {
        for def in SERVICES {
            assert_eq!(service(def.id).map(|s| s.id), Ok(def.id));
            assert_eq!(SERVICES.iter().filter(|s| s.id == def.id).count(), 1);
        }
        let err = service("vpn").map(|s| s.id);
        assert!(matches!(err, Err(UnknownService(ref id)) if id == "vpn"));
    }

    #[test]
    fn zpa_default_depends_on_tenant_age_and_others_are_on() {
        let zpa = service("private_access").expect("zpa exists");
        assert!(zpa.default_enabled_for(ZPA_SELECTIVE_ERA_STARTS - 1));
        assert!(!zpa.default_enabled_for(ZPA_SELECTIVE_ERA_STARTS));
        for id in ["internet_access", "digital_experience"] {
            let def = service(id).expect("service exists");
            assert!(def.default_enabled_for(0));
            assert!(def.default_enabled_for(ZPA_SELECTIVE_ERA_STARTS + 1));
        }
    }

    #[test]
    fn minimum_versions_match_the_spec() {
        let min = |id: &str| service(id).map(|s| s.min_version.to_string());
        assert_eq!(min("private_access").as_deref(), Ok("1.2.4"));
        assert_eq!(min("digital_experience").as_deref(), Ok("2.2.1"));
        assert_eq!(min("internet_access").as_deref(), Ok("3.9"));
    }
}
