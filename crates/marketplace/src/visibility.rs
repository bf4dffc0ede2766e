//! Who may see a template. Anything a caller may not see is reported as missing (404), in lists
//! and by id, so its existence does not leak.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Everyone with `marketplace:read`.
    Public,
    /// Tokens of the owner's workspace.
    Workspace,
    /// The owner only.
    Private,
}

impl Visibility {
    pub const ALL: [Visibility; 3] = [
        Visibility::Public,
        Visibility::Workspace,
        Visibility::Private,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Workspace => "workspace",
            Visibility::Private => "private",
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Visibility::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not one of public, workspace, private"))
    }
}

/// The caller, as far as visibility is concerned. A user is identified by workspace and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub workspace: String,
    pub user: String,
    /// Operators (`admin`) see and may unlist every template, for moderation.
    pub admin: bool,
}

impl Viewer {
    pub fn is_owner(&self, owner_workspace: &str, owner: &str) -> bool {
        self.workspace == owner_workspace && self.user == owner
    }

    pub fn can_see(&self, vis: Visibility, owner_workspace: &str, owner: &str) -> bool {
        self.admin
            || match vis {
                Visibility::Public => true,
                Visibility::Workspace => self.workspace == owner_workspace,
                Visibility::Private => self.is_owner(owner_workspace, owner),
            }
    }

    /// Owners manage their templates; admins may also unlist and yank (moderation).
    pub fn can_moderate(&self, owner_workspace: &str, owner: &str) -> bool {
        self.admin || self.is_owner(owner_workspace, owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(ws: &str, user: &str) -> Viewer {
        Viewer {
            workspace: ws.into(),
            user: user.into(),
            admin: false,
        }
    }

    #[test]
    fn visibility_matrix() {
        let owner = viewer("w1", "alice");
        let colleague = viewer("w1", "bob");
        let stranger = viewer("w2", "carol");
        let namesake = viewer("w2", "alice");
        for (vis, expect) in [
            (Visibility::Public, [true, true, true, true]),
            (Visibility::Workspace, [true, true, false, false]),
            (Visibility::Private, [true, false, false, false]),
        ] {
            let got =
                [&owner, &colleague, &stranger, &namesake].map(|v| v.can_see(vis, "w1", "alice"));
            assert_eq!(got, expect, "{vis}");
        }
        let admin = Viewer {
            admin: true,
            ..viewer("w9", "root")
        };
        assert!(admin.can_see(Visibility::Private, "w1", "alice"));
        assert!(admin.can_moderate("w1", "alice"));
        assert!(!namesake.can_moderate("w1", "alice"));
        assert_eq!("workspace".parse::<Visibility>(), Ok(Visibility::Workspace));
        assert!("secret".parse::<Visibility>().is_err());
    }
}
