//! The rules of reconciliation (对账) reports and adjustments (调账).

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The reconciliation commands.
    pub(super) fn execute_reconciliation(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::Adjust {
                account,
                direction,
                amount,
                reason,
                reference,
                difference,
            } => self.adjust(
                *account,
                *direction,
                *amount,
                reason,
                reference,
                difference.as_ref(),
            ),
            CommandBody::RecordReconciliation { report } => {
                self.terminal_allowed()?;
                let mut report = report.clone();
                self.keep_adjustments(&mut report);
                self.reports.push(Report::Reconciliation(report.clone()));
                Ok(Effect::ReconciliationRecorded {
                    date: report.date.clone(),
                    differences: report.differences.len() as u64,
                })
            }
            CommandBody::RecordHisReconciliation { report } => {
                self.terminal_allowed()?;
                self.reports.push(Report::HisReconciliation(report.clone()));
                Ok(Effect::ReconciliationRecorded {
                    date: report.date.clone(),
                    differences: report.differences.len() as u64,
                })
            }
            other => unreachable!("{} is not one of the reconciliation commands", other.name()),
        }
    }

    /// 调账: an entry a person makes, with a reason and a reference. Naming a reconciliation
    /// difference, only an open one (not one reconciliation resolved, nor one a reversal is
    /// settling), by its amount and on the account of its operation; the day's report then
    /// shows it resolved by this entry. The account may be frozen (a correction is not a
    /// payment) but does not go below its overdraft.
    pub(super) fn adjust(
        &mut self,
        id: AccountId,
        direction: AdjustDirection,
        amount: Money,
        reason: &str,
        reference: &str,
        difference: Option<&DifferenceRef>,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let operator = self.operator()?;
        // A difference is resolved by exactly its amount, whatever the limit is now (it may
        // have been lowered since the day it was found).
        let amount = match difference {
            Some(_) => amount
                .check_positive(Rules::highest_limit())
                .map_err(|e| Rejection::new(ReasonCode::InvalidAmount, e.to_string()))?,
            None => self.amount(amount)?,
        };
        for (field, text, max) in [("reason", reason, 200), ("reference", reference, 64)] {
            if text.trim().is_empty()
                || text.chars().count() > max
                || text.chars().any(char::is_control)
            {
                return reject(
                    ReasonCode::InvalidAdjustment,
                    format!("an adjustment's {field} is 1 to {max} characters of plain text"),
                );
            }
        }
        let account = self.account_exists(id)?;
        let resolved = match difference {
            None => None,
            Some(DifferenceRef { date, bank_ref }) => {
                let key = format!("recon/{date}");
                let Some(Report::Reconciliation(mut report)) = self.report(&key) else {
                    return reject(
                        ReasonCode::DifferenceNotFound,
                        format!("no reconciliation report for {date}"),
                    );
                };
                let Some(d) = report
                    .differences
                    .iter_mut()
                    .find(|d| &d.bank_ref == bank_ref)
                else {
                    return reject(
                        ReasonCode::DifferenceNotFound,
                        format!("the report of {date} has no difference for {bank_ref}"),
                    );
                };
                if !d.resolution.starts_with("open") {
                    return reject(
                        ReasonCode::DifferenceAlreadyResolved,
                        format!(
                            "the difference for {bank_ref} on {date} is {}",
                            d.resolution
                        ),
                    );
                }
                let (due, direction_due, account_due) = self.adjustment_due(d, date)?;
                if amount != due || direction != direction_due || id != account_due {
                    return reject(
                        ReasonCode::AdjustmentMismatch,
                        format!(
                            "the difference for {bank_ref} on {date} calls for {direction_due:?} {due} on account {account_due}, not {direction:?} {amount} on {id}"
                        ),
                    );
                }
                d.resolution = format!(
                    "resolved by adjustment {} ({operator}, {direction:?} {amount}): {reason} [{reference}]",
                    self.ctx.txn
                );
                Some(report)
            }
        };
        let kind = match direction {
            AdjustDirection::Credit => EntryKind::AdjustmentCredit,
            AdjustDirection::Debit => {
                let floor = account.overdraft_limit.negated();
                if account
                    .balance
                    .checked_sub(amount)
                    .is_none_or(|after| after < floor)
                {
                    return reject(
                        ReasonCode::InsufficientFunds,
                        format!(
                            "account {id} holds {}; taking {amount} would go below its overdraft {}",
                            account.balance, account.overdraft_limit
                        ),
                    );
                }
                EntryKind::AdjustmentDebit
            }
        };
        let balance = self.post(Movement {
            account: id,
            kind,
            channel: Channel::Account,
            amount,
            bill: None,
            bank_ref: None,
            terminal: self.cmd.terminal.clone(),
        });
        if let Some(report) = resolved {
            self.reports.push(Report::Reconciliation(report));
        }
        Ok(Effect::BalanceChanged {
            account: id,
            txn: self.ctx.txn,
            amount,
            balance,
        })
    }

    /// What a reconciliation difference calls for. Only one with no automatic path is
    /// adjusted: the bank and a completed operation of ours disagree on the amount. The
    /// adjustment gives the patient what the bank took from (or did not give to) the card
    /// beyond our books, or takes back what we booked beyond the bank. Everything else has
    /// another way out that an adjustment would double: an operation still in flight (its saga
    /// settles it), one declined or reversed here (reconciliation reverses it at the bank), a
    /// reference we never started (the bank returns it), one not on the statement (it may be
    /// on the next day's).
    pub(super) fn adjustment_due(
        &self,
        d: &crate::model::ReconDifference,
        date: &str,
    ) -> Rule<(Money, AdjustDirection, AccountId)> {
        let bank_ref = &d.bank_ref;
        let op = self
            .bank_op(bank_ref)
            // A captured hold moved nothing itself: its capture is the money.
            .filter(|op| op.state == BankOpState::Completed && !op.purpose.is_hold());
        let (Some(op), DifferenceKind::AmountDiffers, Some(bank)) = (op, d.kind, d.bank_amount)
        else {
            return reject(
                ReasonCode::AdjustmentMismatch,
                format!(
                    "the difference for {bank_ref} on {date} ({:?}, ours {:?}) is not settled by an adjustment: {}",
                    d.kind, d.journal_state, d.resolution
                ),
            );
        };
        let more_at_bank = bank.cents() - op.amount.cents();
        let due = Money::from_cents(more_at_bank.abs());
        // A debit took money from the card: the bank taking more means the patient is owed it.
        // A credit gave money to the card: the bank giving more means the patient owes it.
        let credit = (op.kind == BankOpKind::Debit) == (more_at_bank > 0);
        let direction = if credit {
            AdjustDirection::Credit
        } else {
            AdjustDirection::Debit
        };
        Ok((due, direction, op.account))
    }

    /// A reconciliation run again for a day keeps what people resolved by adjustment, so a
    /// difference is never adjusted twice: the same reference, kind and amounts in the new
    /// report shows the same resolution; a reference found again with another kind or amounts,
    /// or no longer found (the bank corrected its statement, say), is marked for review with
    /// the adjustment named, since it now stands alone. Either way it is no longer "open".
    pub(super) fn keep_adjustments(&self, report: &mut crate::model::ReconciliationReport) {
        const ADJUSTED: &str = "resolved by adjustment";
        let Some(Report::Reconciliation(before)) = self.report(&format!("recon/{}", report.date))
        else {
            return;
        };
        for old in &before.differences {
            let Some(at) = old.resolution.find(ADJUSTED) else {
                continue;
            };
            let adjusted = &old.resolution[at..];
            match report
                .differences
                .iter_mut()
                .find(|d| d.bank_ref == old.bank_ref)
            {
                Some(d)
                    if d.kind == old.kind
                        && d.bank_amount == old.bank_amount
                        && d.journal_amount == old.journal_amount =>
                {
                    d.resolution = old.resolution.clone();
                }
                Some(d) => {
                    d.resolution = format!(
                        "review: now {:?} (bank {:?}, ours {:?}), after {adjusted}",
                        d.kind, d.bank_amount, d.journal_amount
                    );
                }
                None => {
                    let mut gone = old.clone();
                    gone.resolution = format!("review: no longer a difference, after {adjusted}");
                    report.differences.push(gone);
                }
            }
        }
    }
}
