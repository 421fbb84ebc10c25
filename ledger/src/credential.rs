//! Credentials of terminals, systems and operators: who may call which API method. A
//! credential has an id, one or more roles, optionally the one terminal it acts for, and the
//! SHA-256 of its secret (the secret itself is never sent to the cluster nor stored). They are
//! replicated like everything else, so every node checks the same set, and every change is in
//! the audit trail.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::TerminalId;
use crate::model::Timestamp;

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// 自助机
    Kiosk,
    /// 收费窗口 (a cashier's workstation)
    Window,
    /// 移动端 (the hospital's app or mini-program back end)
    Mobile,
    /// The hospital information system
    His,
    /// IT and finance administration
    Admin,
    /// Read-only: reports, the audit trail, the balance audit
    Auditor,
    /// The bank's or a payment channel's notifications
    Bank,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Kiosk,
        Role::Window,
        Role::Mobile,
        Role::His,
        Role::Admin,
        Role::Auditor,
        Role::Bank,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kiosk => "kiosk",
            Role::Window => "window",
            Role::Mobile => "mobile",
            Role::His => "his",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Bank => "bank",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text.trim())
    }

    /// `kiosk,window` (or `kiosk+window`) into roles, refusing unknown names and duplicates.
    pub fn parse_list(text: &str) -> Result<Vec<Role>, String> {
        let mut roles = Vec::new();
        for part in text.split([',', '+']).filter(|p| !p.trim().is_empty()) {
            let role = Role::parse(part).ok_or_else(|| {
                format!(
                    "unknown role {part:?}; roles are {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })?;
            if roles.contains(&role) {
                return Err(format!("role {part} is listed twice"));
            }
            roles.push(role);
        }
        if roles.is_empty() {
            return Err("a credential needs at least one role".into());
        }
        roles.sort();
        Ok(roles)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One credential as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub roles: Vec<Role>,
    /// When set, calls naming another terminal are refused.
    pub terminal: Option<TerminalId>,
    /// Lowercase hex SHA-256 of the secret.
    pub secret_sha256: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Credential {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// Checks a credential id: 1 to 64 of letters, digits, `-`, `_`, `.`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err("a credential id has 1 to 64 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "credential id {id:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// Checks a secret hash: 64 lowercase hex digits.
pub fn check_sha256(hex: &str) -> Result<(), String> {
    if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err("the secret's SHA-256 is 64 lowercase hex digits".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_refuse_unknown_or_repeated_names() {
        assert_eq!(
            Role::parse_list("window,kiosk").unwrap(),
            vec![Role::Kiosk, Role::Window]
        );
        assert!(
            Role::parse_list("kiosk,root")
                .unwrap_err()
                .contains("unknown role")
        );
        assert!(Role::parse_list("kiosk+kiosk").is_err());
        assert!(Role::parse_list("").is_err());
        assert!(check_id("K-0001.app").is_ok());
        assert!(check_id("a b").is_err());
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        assert!(check_sha256(&"A".repeat(64)).is_err());
    }
}
