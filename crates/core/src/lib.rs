//! The pure core of entitle: what a service is, how it is configured, and the one
//! function that decides whether a user's device gets it.
//!
//! Nothing here does I/O, reads the clock or knows about HTTP, SQL or JSON: every
//! other crate converts its own types into these and calls [`evaluate`] or [`impact`].

mod decision;
mod device;
#[cfg(test)]
mod exclusion_tests;
mod groups;
mod impact;
mod rollout;
mod service;
mod settings;
mod text;
mod version;

pub use decision::{
    ActiveGrant, Decision, GroupNames, NoNames, Reason, Subject, Verdict, decide, evaluate,
};
pub use device::{
    DeviceGroup, DeviceGroupId, DeviceReport, Os, Ownership, PostureOp, PostureRequirement,
    PostureValue, RuleError, effective_device_groups,
};
pub use groups::{GroupGraph, GroupId};
pub use impact::{
    IMPACT_SAMPLE_SIZE, Impact, ImpactSide, MovedEntry, PopulationEntry, impact, impact_of_moves,
    impact_of_moves_with_names,
};
pub use rollout::{ROLLOUT_STEPS, RolloutStep, in_rollout, rollout_bucket, rollout_preview};
pub use service::{LegacyBehaviour, SERVICES, ServiceDef, UnknownService, service};
pub use settings::{FULL_ROLLOUT, SaveError, Settings, check_group_ids, validate_save};
pub use text::{NameRefusal, is_bidi_control, is_name_char, is_text_char, name_refusal};
pub use version::{ClientVersion, VersionError};
