//! The discovery endpoints (RFC 7644 §4): `/ServiceProviderConfig` and
//! `/ResourceTypes`. `/Schemas` lives beside the attribute table it renders.

use serde_json::{Value, json};

use crate::list_response;
use crate::schema::{
    ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, RESOURCE_TYPE_SCHEMA, SERVICE_PROVIDER_CONFIG_SCHEMA,
    USER_SCHEMA,
};

/// The most resources one list answer returns; the server must clamp `count` to it.
pub const MAX_RESULTS: usize = 200;

/// `/ServiceProviderConfig` (RFC 7643 §5): what entitle supports.
pub fn service_provider_config(base_url: &str) -> Value {
    let base_url = base_url.trim_end_matches('/');
    json!({
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "The tenant's SCIM token, sent as `Authorization: Bearer <token>`.",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base_url}/ServiceProviderConfig"),
        },
    })
}

/// `/ResourceTypes` (RFC 7643 §6): a ListResponse of User and Group.
pub fn resource_types(base_url: &str) -> Value {
    let all: Vec<Value> = ["User", "Group"]
        .iter()
        .filter_map(|name| resource_type_by_name(name, base_url))
        .collect();
    let total = all.len();
    list_response(all, total, 1)
}

/// One resource type by name (case-insensitive), as `/ResourceTypes/{name}` serves it.
pub fn resource_type_by_name(name: &str, base_url: &str) -> Option<Value> {
    let base_url = base_url.trim_end_matches('/');
    let location = |id: &str| format!("{base_url}/ResourceTypes/{id}");
    if name.eq_ignore_ascii_case("User") {
        return Some(json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "User Account",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": location("User")},
        }));
    }
    if name.eq_ignore_ascii_case("Group") {
        return Some(json!({
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group",
            "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": location("Group")},
        }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7643_5_service_provider_config() {
        let config = service_provider_config("https://h/scim/v2/t/");
        let cases = [
            ("/patch/supported", json!(true)),
            ("/bulk/supported", json!(false)),
            ("/filter/supported", json!(true)),
            ("/filter/maxResults", json!(200)),
            ("/changePassword/supported", json!(false)),
            ("/sort/supported", json!(false)),
            ("/etag/supported", json!(true)),
            ("/authenticationSchemes/0/type", json!("oauthbearertoken")),
            (
                "/meta/location",
                json!("https://h/scim/v2/t/ServiceProviderConfig"),
            ),
        ];
        for (pointer, expected) in cases {
            assert_eq!(config.pointer(pointer), Some(&expected), "{pointer}");
        }
    }

    #[test]
    fn rfc7643_6_resource_types() {
        let list = resource_types("https://h/scim/v2/t");
        assert_eq!(list["totalResults"], 2);
        assert_eq!(list["Resources"][0]["endpoint"], "/Users");
        assert_eq!(
            list["Resources"][0]["schemaExtensions"][0]["schema"],
            ENTERPRISE_USER_SCHEMA
        );
        assert_eq!(list["Resources"][1]["schema"], GROUP_SCHEMA);
        assert_eq!(
            resource_type_by_name("group", "https://h/scim/v2/t")
                .and_then(|g| g["meta"]["location"].as_str().map(str::to_owned)),
            Some("https://h/scim/v2/t/ResourceTypes/Group".to_owned())
        );
        assert!(resource_type_by_name("Device", "b").is_none());
    }
}
