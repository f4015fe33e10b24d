//! SCIM 2.0 as entitle speaks it, with no I/O: the server stores what these
//! functions produce and renders what they return.
//!
//! The filter parser and the PATCH engine are written here rather than taken
//! from `scim_v2`, because that crate refuses filters that Entra ID really sends
//! (unquoted values, value paths followed by a sub-attribute).

mod error;
mod filter;

pub use filter::get_ci;
mod patch;
mod resource;

pub use error::{ScimError, ScimType};
pub use filter::{AttrPath, CompValue, CompareOp, Filter, Lookup};
pub use patch::{PatchOp, PatchOperation, PatchRequest};
pub use resource::{
    ENTERPRISE_USER, ERROR_SCHEMA, GROUP_SCHEMA, Group, LIST_SCHEMA, PATCH_SCHEMA, USER_SCHEMA,
    User, list_response, project, resource_types, schemas, service_provider_config,
};
