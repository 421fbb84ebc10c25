//! The rules of administration: credentials, request-record retention, access and membership records.

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The admin commands.
    pub(super) fn execute_admin(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::PutCredential {
                id,
                roles,
                terminal,
                secret_sha256,
            } => {
                self.terminal_allowed()?;
                crate::credential::check_id(id)
                    .and_then(|()| crate::credential::check_sha256(secret_sha256))
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                if roles.is_empty() {
                    return reject(ReasonCode::InvalidCredential, "a credential needs a role");
                }
                if self.base.credential(id).is_some() {
                    return reject(
                        ReasonCode::CredentialExists,
                        format!("credential {id} exists (ids are never reused)"),
                    );
                }
                let mut roles = roles.clone();
                roles.sort();
                roles.dedup();
                self.credentials.push(Credential {
                    id: id.clone(),
                    roles,
                    terminal: terminal.clone(),
                    secret_sha256: secret_sha256.clone(),
                    created_at: self.cmd.at,
                    revoked_at: None,
                });
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::RevokeCredential { id } => {
                self.terminal_allowed()?;
                let Some(mut credential) = self.base.credential(id) else {
                    return reject(
                        ReasonCode::CredentialNotFound,
                        format!("no credential {id}"),
                    );
                };
                if credential.revoked_at.is_none() {
                    credential.revoked_at = Some(self.cmd.at);
                    self.credentials.push(credential);
                }
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::RevokeBootstrapCredential { id } => {
                self.terminal_allowed()?;
                crate::credential::check_id(id)
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                match self.base.credential(id) {
                    Some(c) if c.is_revoked() => {}
                    Some(_) => {
                        return reject(
                            ReasonCode::CredentialExists,
                            format!("credential {id} is a replicated one: revoke it as such"),
                        );
                    }
                    // A tombstone: every node refuses the id from now on, whatever its
                    // config still lists; no secret matches an empty hash.
                    None => self.credentials.push(Credential {
                        id: id.clone(),
                        roles: Vec::new(),
                        terminal: None,
                        secret_sha256: String::new(),
                        created_at: self.cmd.at,
                        revoked_at: Some(self.cmd.at),
                    }),
                }
                Ok(Effect::Credential { id: id.clone() })
            }
            CommandBody::PruneRequests { before, limit } => {
                self.terminal_allowed()?;
                if *limit == 0 || *limit > MAX_PRUNED_PER_COMMAND {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "a prune lets go of 1 to {MAX_PRUNED_PER_COMMAND} records, not {limit}"
                        ),
                    );
                }
                if *before > self.cmd.at {
                    return reject(
                        ReasonCode::InvalidAmount,
                        "a prune cannot let go of requests not yet made",
                    );
                }
                self.forgotten = self.base.expired_requests(*before, *limit as usize);
                Ok(Effect::RequestsPruned {
                    requests: self.forgotten.len() as u64,
                })
            }
            CommandBody::RecordAccess {
                account,
                reader,
                method,
            } => {
                self.terminal_allowed()?;
                crate::credential::check_id(reader)
                    .or_else(|e| reject(ReasonCode::InvalidCredential, e))?;
                if method.is_empty()
                    || method.len() > 40
                    || !method.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("method {method:?}: 1 to 40 letters or digits"),
                    );
                }
                if self.account(*account).is_none() {
                    return reject(ReasonCode::AccountNotFound, format!("no account {account}"));
                }
                Ok(Effect::Recorded)
            }
            CommandBody::RecordMembership { .. } => {
                self.terminal_allowed()?;
                Ok(Effect::Recorded)
            }
            CommandBody::SetRules { rules } => {
                self.terminal_allowed()?;
                self.operator()?;
                rules
                    .check()
                    .or_else(|e| reject(ReasonCode::InvalidAmount, e))?;
                self.rules = Some(*rules);
                Ok(Effect::RulesSet { rules: *rules })
            }
            other => unreachable!("{} is not one of the admin commands", other.name()),
        }
    }
}
