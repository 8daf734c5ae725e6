//! Who is calling the admin API, and what their role lets them do.
//!
//! Every `[[admin.keys]]` entry has a `role`; what each role may do is this table, the one place
//! that decides (tested endpoint by endpoint in `tests/tests/admin.rs`):
//!
//! | permission | endpoints | oncall | security | auditor | admin |
//! |---|---|---|---|---|---|
//! | (none) | `GET /healthz`, `/readyz`, `/metrics` | open | open | open | open |
//! | `read_state` | `GET /admin/status`, `GET /admin/switches`, `GET /admin/throttles` | ✓ | ✓ | ✓ | ✓ |
//! | `read_audit` | `GET /admin/audit` | – | – | ✓ | ✓ |
//! | `manage_switches` | `POST /admin/switches`, `.../clear`, `POST /admin/throttles`, `.../clear` | ✓ | – | – | ✓ |
//! | `manage_rules` | `POST /admin/rules/reload` | – | ✓ | – | ✓ |
//!
//! No key, or one that matches no entry: `401 invalid_admin_key`. A key whose role lacks the
//! permission: `403 forbidden`. No `[[admin.keys]]` at all: `403 admin_disabled`.

use super::error::AdminError;
use crate::config::AdminKey;
pub use crate::config::Role;
use crate::keys::KeyHash;

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ReadState,
    ReadAudit,
    ManageSwitches,
    ManageRules,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::ReadState => "read_state",
            Permission::ReadAudit => "read_audit",
            Permission::ManageSwitches => "manage_switches",
            Permission::ManageRules => "manage_rules",
        }
    }
}

/// The role matrix (see the module docs).
pub fn may(role: Role, p: Permission) -> bool {
    matches!(
        (role, p),
        (Role::Admin, _)
            | (_, Permission::ReadState)
            | (Role::Auditor, Permission::ReadAudit)
            | (Role::Oncall, Permission::ManageSwitches)
            | (Role::Security, Permission::ManageRules)
    )
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The caller of a request with this `Authorization` header value, allowed `p`.
pub fn authorize(
    keys: &[AdminKey],
    authorization: Option<&[u8]>,
    p: Permission,
) -> Result<Principal, AdminError> {
    if keys.is_empty() {
        return Err(AdminError::new(
            403,
            "admin_disabled",
            "no [[admin.keys]] configured: the admin API is off",
        ));
    }
    let presented = authorization.and_then(crate::keys::bearer).map(KeyHash::of);
    let Some(key) = presented.and_then(|h| keys.iter().find(|k| k.key_hash == h)) else {
        return Err(AdminError::new(
            401,
            "invalid_admin_key",
            "send an admin key as 'Authorization: Bearer KEY'",
        ));
    };
    if !may(key.role, p) {
        return Err(AdminError::new(
            403,
            "forbidden",
            format!(
                "the {} role may not {}",
                key.role.name(),
                p.name().replace('_', " ")
            ),
        ));
    }
    Ok(Principal {
        name: key.name.clone(),
        role: key.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix() {
        use Permission::*;
        let row = |r: Role| [ReadState, ReadAudit, ManageSwitches, ManageRules].map(|p| may(r, p));
        assert_eq!(row(Role::Oncall), [true, false, true, false]);
        assert_eq!(row(Role::Security), [true, false, false, true]);
        assert_eq!(row(Role::Auditor), [true, true, false, false]);
        assert_eq!(row(Role::Admin), [true, true, true, true]);
    }
}
