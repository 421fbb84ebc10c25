//! The rules of cash at kiosks and windows: deposits (现金充值) and withdrawals (退预交金).

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The cash commands.
    pub(super) fn execute_cash(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::DepositCash { card, amount } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let amount = self.amount(*amount)?;
                self.kiosk_cash(amount)?;
                let (_, account) = self.card_in_use(card)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::CashDeposit,
                    channel: Channel::Cash,
                    amount,
                    bill: None,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            CommandBody::WithdrawCash { card, amount } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let (_, account) = self.card_in_use(card)?;
                let amount = self.withdrawal_amount(&account, *amount)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::Withdrawal,
                    channel: Channel::Cash,
                    amount,
                    bill: None,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            other => unreachable!("{} is not one of the cash commands", other.name()),
        }
    }

    /// How much a withdrawal takes: all of the balance when no amount is given. A withdrawal
    /// never uses the overdraft.
    pub(super) fn withdrawal_amount(
        &self,
        account: &Account,
        amount: Option<Money>,
    ) -> Rule<Money> {
        let amount = match amount {
            Some(a) => self.amount(a)?,
            None if account.balance.is_positive() => self.amount(account.balance)?,
            None => {
                return reject(
                    ReasonCode::NothingToWithdraw,
                    format!("account {} has no balance to withdraw", account.id),
                );
            }
        };
        if amount > account.balance {
            return reject(
                ReasonCode::InsufficientFunds,
                format!(
                    "withdrawal of {amount} exceeds the balance {} of account {}",
                    account.balance, account.id
                ),
            );
        }
        Ok(amount)
    }
}
