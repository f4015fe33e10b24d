//! SCIM 2.0 (RFC 7643 / RFC 7644) as entitle speaks it, with no I/O.
//!
//! The server stores users and groups as SCIM JSON documents; this crate
//! parses, validates, filters, patches, projects and describes them. Every
//! attribute characteristic (case sensitivity, type, which attributes exist)
//! comes from one table, the one `/Schemas` serves ([`schemas`]), so what
//! entitle declares and what it does cannot drift apart.

mod discovery;
mod error;
mod filter;
mod patch;
mod projection;
mod resource;
mod schema;

pub use discovery::{MAX_RESULTS, resource_type_by_name, resource_types, service_provider_config};
pub use error::{ERROR_SCHEMA, ScimError, ScimType};
pub use filter::{
    AttrPath, CompValue, CompareOp, Filter, IndexedAttr, MAX_FILTER_DEPTH, MAX_FILTER_LEN,
    PatchPath, get_ci,
};
pub use patch::{PatchOp, PatchOperation, PatchRequest, apply_patch};
pub use projection::{list_response, project};
pub use resource::{
    Member, MemberType, member_ids, members, normalize, normalize_group, normalize_user,
};
pub use schema::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, LIST_RESPONSE_SCHEMA, PATCH_OP_SCHEMA,
    RESOURCE_TYPE_SCHEMA, ResourceKind, SCHEMA_SCHEMA, SERVICE_PROVIDER_CONFIG_SCHEMA, USER_SCHEMA,
    schema_by_id, schemas,
};
