//! The attribute definitions entitle serves (RFC 7643 §7 and §8.7.1).
//!
//! One table drives everything that depends on an attribute's
//! characteristics: `/Schemas`, case sensitivity in filters, boolean
//! coercion, which attributes a create body may carry, and which ones are
//! `returned: always` in projections.

use serde_json::{Value, json};

/// The core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// The ListResponse message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The PatchOp message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// The Schema resource URN.
pub const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// The ResourceType resource URN.
pub const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// The ServiceProviderConfig resource URN.
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";

/// The two resource types entitle serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// `/Users`.
    User,
    /// `/Groups`.
    Group,
}

impl ResourceKind {
    /// The core schema URN of this resource type.
    pub fn schema(self) -> &'static str {
        match self {
            Self::User => USER_SCHEMA,
            Self::Group => GROUP_SCHEMA,
        }
    }

    /// The resource type name, as in `meta.resourceType`.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Group => "Group",
        }
    }

    /// The attribute that names a resource: `userName` or `displayName`.
    pub fn name_attribute(self) -> &'static str {
        match self {
            Self::User => "userName",
            Self::Group => "displayName",
        }
    }

    /// The extension schemas this resource type may carry.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::User => &[ENTERPRISE_USER_SCHEMA],
            Self::Group => &[],
        }
    }

    fn attributes(self) -> &'static [AttrDef] {
        match self {
            Self::User => USER_ATTRS,
            Self::Group => GROUP_ATTRS,
        }
    }
}

/// An attribute's data type (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// A string.
    String,
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 timestamp.
    DateTime,
    /// A URI.
    Reference,
    /// An object of sub-attributes.
    Complex,
}

/// Whether and how clients may change an attribute (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Set by the service provider only.
    ReadOnly,
    /// Clients may set and change it.
    ReadWrite,
    /// Clients may set it once.
    Immutable,
}

/// When an attribute is returned (RFC 7643 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always, even when not asked for.
    Always,
    /// Unless excluded or not listed in `attributes`.
    Default,
}

/// An attribute definition as `/Schemas` declares it.
#[derive(Debug, Clone)]
pub struct AttrDef {
    /// The attribute name in its canonical case.
    pub name: &'static str,
    /// The data type.
    pub ty: AttrType,
    /// Whether the attribute holds a list.
    pub multi_valued: bool,
    /// Whether a resource must carry it.
    pub required: bool,
    /// Whether string comparison respects case.
    pub case_exact: bool,
    /// Who may change it.
    pub mutability: Mutability,
    /// When it is returned.
    pub returned: Returned,
    /// Whether the service provider keeps it unique.
    pub unique: bool,
    /// What it means, for `/Schemas`.
    pub description: &'static str,
    /// Suggested values, for `/Schemas`.
    pub canonical_values: &'static [&'static str],
    /// What a reference points at.
    pub reference_types: &'static [&'static str],
    /// Sub-attributes of a complex attribute.
    pub sub_attributes: &'static [AttrDef],
}

impl AttrDef {
    const fn string(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            ty: AttrType::String,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            unique: false,
            description,
            canonical_values: &[],
            reference_types: &[],
            sub_attributes: &[],
        }
    }

    const fn typed(self, ty: AttrType) -> Self {
        Self { ty, ..self }
    }

    const fn complex(self, sub_attributes: &'static [AttrDef]) -> Self {
        Self {
            ty: AttrType::Complex,
            sub_attributes,
            ..self
        }
    }

    const fn reference(self, reference_types: &'static [&'static str]) -> Self {
        Self {
            ty: AttrType::Reference,
            reference_types,
            ..self
        }
    }

    const fn multi(self) -> Self {
        Self {
            multi_valued: true,
            ..self
        }
    }

    const fn required(self) -> Self {
        Self {
            required: true,
            ..self
        }
    }

    const fn case_exact(self) -> Self {
        Self {
            case_exact: true,
            ..self
        }
    }

    const fn mutability(self, mutability: Mutability) -> Self {
        Self { mutability, ..self }
    }

    const fn always(self) -> Self {
        Self {
            returned: Returned::Always,
            ..self
        }
    }

    const fn unique(self) -> Self {
        Self {
            unique: true,
            ..self
        }
    }

    const fn canonical(self, canonical_values: &'static [&'static str]) -> Self {
        Self {
            canonical_values,
            ..self
        }
    }

    /// The sub-attribute called `name`, in any case.
    pub fn sub(&self, name: &str) -> Option<&'static AttrDef> {
        self.sub_attributes
            .iter()
            .find(|sub| sub.name.eq_ignore_ascii_case(name))
    }

    /// The attribute as `/Schemas` shows it.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "name": self.name,
            "type": match self.ty {
                AttrType::String => "string",
                AttrType::Boolean => "boolean",
                AttrType::DateTime => "dateTime",
                AttrType::Reference => "reference",
                AttrType::Complex => "complex",
            },
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
            },
            "returned": match self.returned {
                Returned::Always => "always",
                Returned::Default => "default",
            },
            "uniqueness": if self.unique { "server" } else { "none" },
        });
        if !self.canonical_values.is_empty() {
            out["canonicalValues"] = json!(self.canonical_values);
        }
        if !self.reference_types.is_empty() {
            out["referenceTypes"] = json!(self.reference_types);
        }
        if !self.sub_attributes.is_empty() {
            out["subAttributes"] = self.sub_attributes.iter().map(AttrDef::to_json).collect();
        }
        out
    }
}

/// A string attribute with the RFC 7643 §2.2 defaults; the other builders adjust it.
const fn s(name: &'static str, description: &'static str) -> AttrDef {
    AttrDef::string(name, description)
}

const NAME_SUBS: &[AttrDef] = &[
    s("formatted", "The full name, formatted for display."),
    s("familyName", "The family name, or last name."),
    s("givenName", "The given name, or first name."),
    s("middleName", "The middle name(s)."),
    s("honorificPrefix", "The honorific prefix(es), or title."),
    s("honorificSuffix", "The honorific suffix(es)."),
];

const EMAIL_SUBS: &[AttrDef] = &[
    s("value", "The email address."),
    s("display", "A human-readable name for the address."),
    s("type", "A label for the address' function.").canonical(&["work", "home", "other"]),
    s("primary", "Whether this is the preferred address.").typed(AttrType::Boolean),
];

const PHONE_SUBS: &[AttrDef] = &[
    s("value", "The phone number."),
    s("display", "A human-readable form of the number."),
    s("type", "A label for the number's function.")
        .canonical(&["work", "home", "mobile", "fax", "pager", "other"]),
    s("primary", "Whether this is the preferred number.").typed(AttrType::Boolean),
];

const EXTERNAL_ID: AttrDef =
    s("externalId", "The identifier the provisioning client uses.").case_exact();

const USER_ATTRS: &[AttrDef] = &[
    s("userName", "The unique name the user signs in with.")
        .required()
        .unique(),
    s("name", "The components of the user's name.").complex(NAME_SUBS),
    s("displayName", "The name shown for the user."),
    s("nickName", "The casual name of the user."),
    s("title", "The user's job title."),
    s(
        "userType",
        "The relationship between the organisation and the user.",
    ),
    s(
        "preferredLanguage",
        "The user's preferred written or spoken language.",
    ),
    s("locale", "The user's default location, for localisation."),
    s("timezone", "The user's time zone, in IANA form."),
    s("active", "Whether the user may use the service.").typed(AttrType::Boolean),
    s("emails", "The user's email addresses.")
        .multi()
        .complex(EMAIL_SUBS),
    s("phoneNumbers", "The user's phone numbers.")
        .multi()
        .complex(PHONE_SUBS),
    EXTERNAL_ID,
];

const MEMBER_SUBS: &[AttrDef] = &[
    s("value", "The id of the member user or group.")
        .case_exact()
        .mutability(Mutability::Immutable),
    s("$ref", "The URI of the member.")
        .reference(&["User", "Group"])
        .mutability(Mutability::Immutable),
    s("type", "Whether the member is a user or a group.")
        .canonical(&["User", "Group"])
        .mutability(Mutability::Immutable),
    s("display", "The member's name.").mutability(Mutability::Immutable),
];

const GROUP_ATTRS: &[AttrDef] = &[
    s("displayName", "The name of the group.").required(),
    s("members", "The users and groups in this group.")
        .multi()
        .complex(MEMBER_SUBS),
    EXTERNAL_ID,
];

const MANAGER_SUBS: &[AttrDef] = &[
    s("value", "The id of the user's manager.").case_exact(),
    s("$ref", "The URI of the user's manager.").reference(&["User"]),
    s("displayName", "The manager's name."),
];

const ENTERPRISE_ATTRS: &[AttrDef] = &[
    s(
        "employeeNumber",
        "The number the organisation gives the user.",
    ),
    s("costCenter", "The user's cost centre."),
    s("organization", "The user's organisation."),
    s("division", "The user's division."),
    s("department", "The user's department."),
    s("manager", "The user's manager.").complex(MANAGER_SUBS),
];

/// The enterprise extension seen as one complex attribute, the way it sits
/// in a resource's JSON under its URN key.
const ENTERPRISE_CONTAINER: AttrDef =
    s(ENTERPRISE_USER_SCHEMA, "The enterprise extension.").complex(ENTERPRISE_ATTRS);

const META_SUBS: &[AttrDef] = &[
    s("resourceType", "The resource type.")
        .case_exact()
        .mutability(Mutability::ReadOnly),
    s("created", "When the resource was created.")
        .typed(AttrType::DateTime)
        .mutability(Mutability::ReadOnly),
    s("lastModified", "When the resource last changed.")
        .typed(AttrType::DateTime)
        .mutability(Mutability::ReadOnly),
    s("location", "The URI of the resource.")
        .reference(&["uri"])
        .case_exact()
        .mutability(Mutability::ReadOnly),
    s("version", "The resource's entity tag.")
        .case_exact()
        .mutability(Mutability::ReadOnly),
];

/// Attributes every resource carries (RFC 7643 §3.1); `/Schemas` leaves them out.
const COMMON_ATTRS: &[AttrDef] = &[
    s("id", "The identifier the service provider assigned.")
        .case_exact()
        .always()
        .unique()
        .mutability(Mutability::ReadOnly),
    s("schemas", "The schemas the resource follows.")
        .reference(&["uri"])
        .case_exact()
        .multi()
        .always()
        .mutability(Mutability::ReadOnly),
    s("meta", "Resource metadata.")
        .complex(META_SUBS)
        .mutability(Mutability::ReadOnly),
];

/// Whether `urn` names the core schema of either resource type.
pub(crate) fn is_core_schema(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(USER_SCHEMA) || urn.eq_ignore_ascii_case(GROUP_SCHEMA)
}

/// Whether `urn` names an extension schema entitle knows.
pub(crate) fn extension_schema(urn: &str) -> Option<&'static str> {
    urn.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA)
        .then_some(ENTERPRISE_USER_SCHEMA)
}

/// The definition of a top-level attribute, or of a whole extension when
/// `name` is its URN. `kind` narrows the search; `None` searches both types,
/// which is safe because the names they share mean the same.
pub(crate) fn find_attr(
    kind: Option<ResourceKind>,
    urn: Option<&str>,
    name: &str,
) -> Option<&'static AttrDef> {
    let by_name =
        |list: &'static [AttrDef]| list.iter().find(|a| a.name.eq_ignore_ascii_case(name));
    match urn {
        Some(urn) if !is_core_schema(urn) => {
            if extension_schema(urn).is_some() && kind != Some(ResourceKind::Group) {
                return by_name(ENTERPRISE_ATTRS);
            }
            None
        }
        _ => {
            if extension_schema(name).is_some() && kind != Some(ResourceKind::Group) {
                return Some(&ENTERPRISE_CONTAINER);
            }
            by_name(COMMON_ATTRS).or_else(|| match kind {
                Some(kind) => by_name(kind.attributes()),
                None => by_name(USER_ATTRS).or_else(|| by_name(GROUP_ATTRS)),
            })
        }
    }
}

/// The attributes a resource type declares (without the common ones).
pub(crate) fn declared_attributes(kind: ResourceKind) -> &'static [AttrDef] {
    kind.attributes()
}

/// The `/Schemas` ListResponse: the User, Group and enterprise extension schemas.
pub fn schemas(base_url: &str) -> Value {
    let resources = [USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA]
        .iter()
        .filter_map(|id| schema_by_id(id, base_url))
        .collect::<Vec<_>>();
    let total = resources.len();
    crate::list_response(resources, total, 1)
}

/// One schema document by its URN (case-insensitive), as `/Schemas/{id}` serves it.
pub fn schema_by_id(id: &str, base_url: &str) -> Option<Value> {
    let (id, name, description, attributes) = if id.eq_ignore_ascii_case(USER_SCHEMA) {
        (USER_SCHEMA, "User", "User Account", USER_ATTRS)
    } else if id.eq_ignore_ascii_case(GROUP_SCHEMA) {
        (GROUP_SCHEMA, "Group", "Group", GROUP_ATTRS)
    } else if id.eq_ignore_ascii_case(ENTERPRISE_USER_SCHEMA) {
        (
            ENTERPRISE_USER_SCHEMA,
            "EnterpriseUser",
            "Enterprise User",
            ENTERPRISE_ATTRS,
        )
    } else {
        return None;
    };
    let base_url = base_url.trim_end_matches('/');
    Some(json!({
        "schemas": [SCHEMA_SCHEMA],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attributes.iter().map(AttrDef::to_json).collect::<Vec<_>>(),
        "meta": {
            "resourceType": "Schema",
            "location": format!("{base_url}/Schemas/{id}"),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute<'a>(schema: &'a Value, path: &str) -> &'a Value {
        let mut node = &schema["attributes"];
        let mut found = &Value::Null;
        for part in path.split('.') {
            found = node
                .as_array()
                .and_then(|list| list.iter().find(|a| a["name"] == part))
                .unwrap_or(&Value::Null);
            node = &found["subAttributes"];
        }
        found
    }

    fn check(schema: &str, path: &str, field: &str, expected: Value) {
        let doc = schema_by_id(schema, "https://x/scim/v2/t").expect("known schema");
        assert_eq!(
            attribute(&doc, path)[field],
            expected,
            "{schema} {path} {field}"
        );
    }

    #[test]
    fn rfc7643_8_7_1_user_group_and_enterprise_attributes() {
        let cases = [
            (USER_SCHEMA, "userName", "required", json!(true)),
            (USER_SCHEMA, "userName", "uniqueness", json!("server")),
            (USER_SCHEMA, "userName", "caseExact", json!(false)),
            (USER_SCHEMA, "name.givenName", "type", json!("string")),
            (
                USER_SCHEMA,
                "name.honorificSuffix",
                "mutability",
                json!("readWrite"),
            ),
            (USER_SCHEMA, "active", "type", json!("boolean")),
            (USER_SCHEMA, "emails", "multiValued", json!(true)),
            (USER_SCHEMA, "emails.primary", "type", json!("boolean")),
            (USER_SCHEMA, "externalId", "caseExact", json!(true)),
            (USER_SCHEMA, "password", "name", Value::Null),
            (USER_SCHEMA, "groups", "name", Value::Null),
            (GROUP_SCHEMA, "displayName", "required", json!(true)),
            (
                GROUP_SCHEMA,
                "members.value",
                "mutability",
                json!("immutable"),
            ),
            (
                GROUP_SCHEMA,
                "members.$ref",
                "referenceTypes",
                json!(["User", "Group"]),
            ),
            (
                GROUP_SCHEMA,
                "members.type",
                "canonicalValues",
                json!(["User", "Group"]),
            ),
            (
                ENTERPRISE_USER_SCHEMA,
                "employeeNumber",
                "type",
                json!("string"),
            ),
            (
                ENTERPRISE_USER_SCHEMA,
                "manager.value",
                "type",
                json!("string"),
            ),
            (
                ENTERPRISE_USER_SCHEMA,
                "manager.$ref",
                "type",
                json!("reference"),
            ),
        ];
        for (schema, path, field, expected) in cases {
            check(schema, path, field, expected);
        }
    }

    #[test]
    fn rfc7644_4_schemas_list_and_lookup() {
        let list = schemas("https://x/scim/v2/t/");
        assert_eq!(list["totalResults"], 3);
        assert_eq!(
            list["Resources"][2]["meta"]["location"],
            format!("https://x/scim/v2/t/Schemas/{ENTERPRISE_USER_SCHEMA}")
        );
        assert!(schema_by_id(&USER_SCHEMA.to_uppercase(), "b").is_some());
        assert!(schema_by_id("urn:nope", "b").is_none());
    }

    #[test]
    fn lookups_respect_the_resource_kind_and_urns() {
        assert!(find_attr(Some(ResourceKind::User), None, "USERNAME").is_some());
        assert!(find_attr(Some(ResourceKind::Group), None, "userName").is_none());
        assert!(find_attr(None, Some(USER_SCHEMA), "userName").is_some());
        assert!(find_attr(None, Some(ENTERPRISE_USER_SCHEMA), "department").is_some());
        assert!(find_attr(None, None, ENTERPRISE_USER_SCHEMA).is_some());
        assert!(find_attr(None, Some("urn:other"), "x").is_none());
        assert!(find_attr(None, None, "id").is_some_and(|a| a.case_exact));
    }
}
