//! The rules of account controls: freeze, unfreeze, overdraft (绿色通道).

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The accounts commands.
    pub(super) fn execute_accounts(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::Freeze { account } => {
                self.set_account_status(*account, AccountStatus::Frozen)
            }
            CommandBody::Unfreeze { account } => {
                self.set_account_status(*account, AccountStatus::Active)
            }
            CommandBody::SetOverdraft { account, limit } => {
                self.terminal_allowed()?;
                if limit.is_negative() {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("overdraft limit {limit} is negative"),
                    );
                }
                if *limit > self.ctx.rules.max_overdraft {
                    return reject(
                        ReasonCode::OverdraftAboveMaximum,
                        format!(
                            "overdraft limit {limit} is above the maximum {}",
                            self.ctx.rules.max_overdraft
                        ),
                    );
                }
                let mut a = self.account_exists(*account)?;
                if a.balance < limit.negated() {
                    return reject(
                        ReasonCode::OverdraftInUse,
                        format!(
                            "account {account} is at {}, below the new limit {limit}",
                            a.balance
                        ),
                    );
                }
                a.overdraft_limit = *limit;
                self.put_account(a);
                Ok(Effect::OverdraftSet {
                    account: *account,
                    limit: *limit,
                })
            }
            other => unreachable!("{} is not one of the accounts commands", other.name()),
        }
    }

    pub(super) fn set_account_status(
        &mut self,
        id: AccountId,
        status: AccountStatus,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let mut account = self.account_exists(id)?;
        account.status = status;
        self.put_account(account);
        Ok(Effect::AccountStatusChanged {
            account: id,
            status,
        })
    }
}
