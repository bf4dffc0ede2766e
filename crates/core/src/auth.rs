//! Permissions, roles and the authenticated principal (DESIGN.md §5).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Every permission the system checks. `Admin` implies every other permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    #[serde(rename = "marketplace:read")]
    MarketplaceRead,
    #[serde(rename = "marketplace:publish")]
    MarketplacePublish,
    #[serde(rename = "marketplace:rate")]
    MarketplaceRate,
    #[serde(rename = "explainability:read")]
    ExplainabilityRead,
    #[serde(rename = "explainability:batch")]
    ExplainabilityBatch,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "webhooks:delete")]
    WebhooksDelete,
    #[serde(rename = "debates:read")]
    DebatesRead,
    #[serde(rename = "debates:write")]
    DebatesWrite,
    #[serde(rename = "knowledge:read")]
    KnowledgeRead,
    #[serde(rename = "knowledge:write")]
    KnowledgeWrite,
    #[serde(rename = "connectors:read")]
    ConnectorsRead,
    #[serde(rename = "connectors:write")]
    ConnectorsWrite,
    #[serde(rename = "admin")]
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 15] = [
        Permission::MarketplaceRead,
        Permission::MarketplacePublish,
        Permission::MarketplaceRate,
        Permission::ExplainabilityRead,
        Permission::ExplainabilityBatch,
        Permission::WebhooksRead,
        Permission::WebhooksWrite,
        Permission::WebhooksDelete,
        Permission::DebatesRead,
        Permission::DebatesWrite,
        Permission::KnowledgeRead,
        Permission::KnowledgeWrite,
        Permission::ConnectorsRead,
        Permission::ConnectorsWrite,
        Permission::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::MarketplaceRead => "marketplace:read",
            Permission::MarketplacePublish => "marketplace:publish",
            Permission::MarketplaceRate => "marketplace:rate",
            Permission::ExplainabilityRead => "explainability:read",
            Permission::ExplainabilityBatch => "explainability:batch",
            Permission::WebhooksRead => "webhooks:read",
            Permission::WebhooksWrite => "webhooks:write",
            Permission::WebhooksDelete => "webhooks:delete",
            Permission::DebatesRead => "debates:read",
            Permission::DebatesWrite => "debates:write",
            Permission::KnowledgeRead => "knowledge:read",
            Permission::KnowledgeWrite => "knowledge:write",
            Permission::ConnectorsRead => "connectors:read",
            Permission::ConnectorsWrite => "connectors:write",
            Permission::Admin => "admin",
        }
    }

    fn is_read(self) -> bool {
        self.as_str().ends_with(":read")
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission `{s}`"))
    }
}

/// Named permission sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Member,
    Admin,
}

impl Role {
    pub fn permissions(self) -> BTreeSet<Permission> {
        use Permission::*;
        let viewer = Permission::ALL.into_iter().filter(|p| p.is_read());
        match self {
            Role::Viewer => viewer.collect(),
            Role::Member => viewer
                .chain([
                    MarketplacePublish,
                    MarketplaceRate,
                    ExplainabilityBatch,
                    WebhooksWrite,
                    WebhooksDelete,
                    DebatesWrite,
                    KnowledgeWrite,
                ])
                .collect(),
            Role::Admin => Permission::ALL.into_iter().collect(),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected viewer, member or admin)"
            )),
        }
    }
}

/// Who is calling: the token's id, its workspace and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    /// The user the token acts for (the token name unless set); owners and raters are users.
    pub user: String,
    pub workspace: String,
    pub permissions: BTreeSet<Permission>,
}

impl Principal {
    pub fn has(&self, p: Permission) -> bool {
        self.permissions.contains(&Permission::Admin) || self.permissions.contains(&p)
    }

    pub fn is_admin(&self) -> bool {
        self.permissions.contains(&Permission::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_nested_permission_sets() {
        let viewer = Role::Viewer.permissions();
        let member = Role::Member.permissions();
        let admin = Role::Admin.permissions();
        assert!(viewer.is_subset(&member) && member.is_subset(&admin));
        assert!(viewer.iter().all(|p| p.as_str().ends_with(":read")));
        assert!(member.contains(&Permission::WebhooksDelete));
        assert!(!member.contains(&Permission::ConnectorsWrite));
        assert!(!member.contains(&Permission::Admin));
        assert_eq!(admin.len(), Permission::ALL.len());
    }

    #[test]
    fn permissions_round_trip_through_strings() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("webhooks:explode".parse::<Permission>().is_err());
    }

    #[test]
    fn admin_implies_everything() {
        let p = Principal {
            token_id: "tok-1".into(),
            user: "root".into(),
            workspace: "default".into(),
            permissions: [Permission::Admin].into_iter().collect(),
        };
        assert!(p.has(Permission::ConnectorsWrite));
    }
}
