//! The rules of bills from HIS: posting, cancelling (whole or in part), invoices, paying from the account, and refunds (退费) to the account or in cash.

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The bills commands.
    pub(super) fn execute_bills(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::PostBill {
                bill,
                card,
                kind,
                amount,
            } => self.post_bill(bill, card, *kind, *amount),
            CommandBody::PostInsuredBill {
                bill,
                card,
                kind,
                split,
            } => self.post_insured_bill(bill, card, *kind, split),
            CommandBody::CancelBill { bill } => {
                self.terminal_allowed()?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                self.still_open(&b)?;
                // The insurance settlement is reversed with the bill (整单冲销).
                if let Some(mut insured) = self.insured_bill(bill) {
                    insured.reversed_at = Some(cmd.at);
                    self.insured_bills.insert(bill.clone(), insured);
                }
                let refundable = b.status == BillStatus::Paid;
                let part = b
                    .amount
                    .checked_sub(b.cancelled)
                    .expect("bill amounts within range");
                b.status = BillStatus::Cancelled;
                b.cancelled = b.amount;
                self.bill_event(&b, BillEventKind::Cancelled, part, None);
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillCancelled {
                    bill: bill.clone(),
                    refundable,
                })
            }
            CommandBody::CancelBillPart { bill, amount } => {
                self.terminal_allowed()?;
                let amount = self.amount(*amount)?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                self.still_open(&b)?;
                if let Some(insured) = self.insured_bill(bill) {
                    return reject(
                        ReasonCode::InsuredBillWholeOnly,
                        format!(
                            "bill {bill} is insured (settlement {}): cancel it whole, which \
                             reverses its insurance settlement, and post what remains as a new bill",
                            insured.split.settlement
                        ),
                    );
                }
                if b.status == BillStatus::Unpaid {
                    return reject(
                        ReasonCode::BillNotPaid,
                        format!("bill {bill} is not paid: cancel it whole, or post it again"),
                    );
                }
                let cancelled = b
                    .cancelled
                    .checked_add(amount)
                    .expect("bill amounts within range");
                if cancelled > b.amount {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "cancelling {amount} more of bill {bill} makes {cancelled}, more than its {}",
                            b.amount
                        ),
                    );
                }
                b.cancelled = cancelled;
                if cancelled == b.amount {
                    b.status = BillStatus::Cancelled;
                }
                self.bill_event(&b, BillEventKind::Cancelled, amount, None);
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillCancelled {
                    bill: bill.clone(),
                    refundable: true,
                })
            }
            CommandBody::MarkInvoiced { bill } => {
                self.terminal_allowed()?;
                let mut b = self.bill_exists(bill)?;
                self.no_op_in_flight(&b)?;
                match (b.status, &b.payment) {
                    (BillStatus::Refunded, _) => {
                        return reject(
                            ReasonCode::AlreadyRefunded,
                            format!("bill {bill} is refunded; there is nothing to invoice"),
                        );
                    }
                    (_, None) => {
                        return reject(
                            ReasonCode::BillNotPaid,
                            format!("bill {bill} is not paid; it cannot be invoiced"),
                        );
                    }
                    _ => {}
                }
                b.invoiced = true;
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BillInvoiced { bill: bill.clone() })
            }
            CommandBody::PayBill { bill, card } => {
                let terminal = self.terminal_allowed()?;
                self.require_shift_at_window(&terminal)?;
                let (_, account) = self.card_in_use(card)?;
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                self.payable(&b)?;
                self.debit_from_account(&account, b.amount)?;
                let balance = self.post(Movement {
                    account: account.id,
                    kind: EntryKind::BillPayment,
                    channel: Channel::Account,
                    amount: b.amount,
                    bill: Some(bill.clone()),
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                });
                b.status = BillStatus::Paid;
                b.payment = Some(Payment {
                    channel: Channel::Account,
                    txn: self.ctx.txn,
                    bank_ref: None,
                    terminal: cmd.terminal.clone(),
                    at: cmd.at,
                });
                let amount = b.amount;
                self.bill_event(&b, BillEventKind::Paid, amount, Some(Channel::Account));
                self.bills.insert(b.id.clone(), b);
                Ok(Effect::BalanceChanged {
                    account: account.id,
                    txn: self.ctx.txn,
                    amount,
                    balance,
                })
            }
            CommandBody::Refund { bill } => self.refund(bill, None, RefundTo::Account, None),
            CommandBody::RefundToAccount { bill, declined } => {
                self.refund(bill, None, RefundTo::Account, Some(declined))
            }
            CommandBody::RefundBill {
                bill,
                amount,
                to,
                declined,
            } => self.refund(bill, *amount, *to, declined.as_ref()),
            other => unreachable!("{} is not one of the bills commands", other.name()),
        }
    }

    pub(super) fn bill_exists(&self, id: &BillId) -> Rule<Bill> {
        self.bill(id).ok_or_else(|| {
            Rejection::new(ReasonCode::BillNotFound, format!("bill {id} is not known"))
        })
    }

    pub(super) fn bill_of(&self, bill: &Bill, account: AccountId) -> Rule<()> {
        if bill.account != account {
            return reject(
                ReasonCode::BillAccountMismatch,
                format!("bill {} belongs to another account", bill.id),
            );
        }
        Ok(())
    }

    pub(super) fn no_op_in_flight(&self, bill: &Bill) -> Rule<()> {
        if let Some(r) = &bill.pending_op {
            return reject(
                ReasonCode::BillOperationInProgress,
                format!("bill {} has bank operation {r} in progress", bill.id),
            );
        }
        Ok(())
    }

    pub(super) fn payable(&self, bill: &Bill) -> Rule<()> {
        match bill.status {
            BillStatus::Unpaid => self.no_op_in_flight(bill),
            BillStatus::Paid | BillStatus::Refunded => reject(
                ReasonCode::BillAlreadyPaid,
                format!("bill {} is already paid", bill.id),
            ),
            BillStatus::Cancelled => reject(
                ReasonCode::BillCancelled,
                format!("bill {} was cancelled by HIS", bill.id),
            ),
        }
    }

    /// HIS cancels only a bill it has not cancelled yet, and not one refunded in full.
    pub(super) fn still_open(&self, bill: &Bill) -> Rule<()> {
        match bill.status {
            BillStatus::Unpaid | BillStatus::Paid => Ok(()),
            BillStatus::Cancelled => reject(
                ReasonCode::BillCancelled,
                format!("bill {} is already cancelled", bill.id),
            ),
            BillStatus::Refunded => reject(
                ReasonCode::AlreadyRefunded,
                format!("bill {} is already refunded", bill.id),
            ),
        }
    }

    /// Refunds: a paid bill, up to what HIS has cancelled of it and not refunded yet; an
    /// invoiced bill only at a window. Returns how it was paid and what is still refundable.
    pub(super) fn refundable(&self, bill: &Bill) -> Rule<(Payment, Money)> {
        let payment = match (bill.status, &bill.payment) {
            (BillStatus::Refunded, _) => {
                return reject(
                    ReasonCode::AlreadyRefunded,
                    format!("bill {} is already refunded", bill.id),
                );
            }
            (_, Some(payment)) => payment.clone(),
            (_, None) => {
                return reject(
                    ReasonCode::BillNotPaid,
                    format!("bill {} was never paid", bill.id),
                );
            }
        };
        self.no_op_in_flight(bill)?;
        let left = bill.refundable();
        if left.is_zero() {
            if bill.refunded.is_zero() {
                return reject(
                    ReasonCode::RefundNotAllowed,
                    format!(
                        "bill {} is paid and not cancelled by HIS; HIS must cancel it (or part of it) first",
                        bill.id
                    ),
                );
            }
            return reject(
                ReasonCode::AlreadyRefunded,
                format!(
                    "all HIS cancelled of bill {} ({}) is already refunded",
                    bill.id, bill.cancelled
                ),
            );
        }
        if bill.invoiced && self.cmd.terminal.kind() != TerminalKind::Window {
            return reject(
                ReasonCode::TerminalNotAllowed,
                format!(
                    "bill {} is invoiced (发票已打印): it is refunded only at a window, where the invoice is taken back",
                    bill.id
                ),
            );
        }
        Ok((payment, left))
    }

    /// How much a refund takes: all that is refundable when no amount is given.
    pub(super) fn refund_amount(
        &self,
        bill: &Bill,
        left: Money,
        asked: Option<Money>,
    ) -> Rule<Money> {
        let Some(asked) = asked else {
            return Ok(left);
        };
        let amount = self.amount(asked)?;
        if amount > left {
            return reject(
                ReasonCode::InvalidAmount,
                format!(
                    "a refund of {amount} is more than the {left} that may go this way of bill {} (paid {}, cancelled {}, refunded {}, declined online and not yet refunded otherwise {})",
                    bill.id, bill.amount, bill.cancelled, bill.refunded, bill.declined_left
                ),
            );
        }
        Ok(amount)
    }

    /// Records `amount` more refunded on the bill; refunded in full, it is Refunded.
    pub(super) fn mark_refunded(bill: &mut Bill, amount: Money) {
        bill.refunded = bill
            .refunded
            .checked_add(amount)
            .expect("bill amounts within range");
        if bill.refunded == bill.amount {
            bill.status = BillStatus::Refunded;
        }
    }

    /// 退费 into the account or in cash at a window: a bill paid from the account, or one paid
    /// by card or channel whose online refund `declined` was declined (or reversed). Money paid
    /// by card or channel goes back only there otherwise: refunded here, it could leave as cash.
    pub(super) fn refund(
        &mut self,
        bill: &BillId,
        amount: Option<Money>,
        to: RefundTo,
        declined: Option<&BankRef>,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let mut b = self.bill_exists(bill)?;
        let (payment, left) = self.refundable(&b)?;
        let mut fallback = None;
        match (payment.channel, declined) {
            (Channel::Account, None) => {}
            (Channel::Account, Some(_)) => {
                return reject(
                    ReasonCode::RefundChannelNotAllowed,
                    format!(
                        "bill {bill} was paid from the account; refund it without a declined bank reference"
                    ),
                );
            }
            (channel, None) => {
                return reject(
                    ReasonCode::RefundChannelNotAllowed,
                    format!(
                        "bill {bill} was paid by {channel:?}; it is refunded to the card or channel that paid (into the account or in cash only after that refund is declined)"
                    ),
                );
            }
            (_, Some(bank_ref)) => {
                let declined_op = self.bank_op(bank_ref).filter(|op| {
                    op.purpose == (BankPurpose::Refund { bill: bill.clone() })
                        && matches!(op.state, BankOpState::Declined | BankOpState::Reversed)
                });
                // What the declined refund still lets go another way: the bill's latest
                // declined refund, up to its amount, once; or, for a bill declined before
                // this release (it records none), the declined refund while nothing has been
                // refunded yet.
                let allowed = match declined_op {
                    Some(_) if b.declined_refund.as_ref() == Some(bank_ref) => b.declined_left,
                    Some(op) if b.declined_refund.is_none() && b.refunded.is_zero() => op.amount,
                    _ => Money::ZERO,
                };
                if allowed.is_zero() {
                    return reject(
                        ReasonCode::RefundChannelNotAllowed,
                        format!(
                            "{bank_ref} is not the latest declined online refund of bill {bill}, or what it declined has gone another way already; refund it to the card or channel that paid"
                        ),
                    );
                }
                fallback = Some(allowed);
            }
        }
        let left = match fallback {
            Some(allowed) if allowed < left => allowed,
            _ => left,
        };
        let amount = self.refund_amount(&b, left, amount)?;
        if fallback.is_some() {
            b.declined_left = b
                .declined_left
                .checked_sub(amount)
                .filter(|rest| !rest.is_negative())
                .unwrap_or(Money::ZERO);
            if b.declined_left.is_zero() {
                b.declined_refund = None;
            }
        }
        let account = self.active(self.account_exists(b.account)?)?;
        let (kind, channel) = match to {
            RefundTo::Account => (EntryKind::Refund, Channel::Account),
            RefundTo::Cash => (EntryKind::CashRefund, Channel::Cash),
        };
        let balance = self.post(Movement {
            account: account.id,
            kind,
            channel,
            amount,
            bill: Some(bill.clone()),
            bank_ref: None,
            terminal: self.cmd.terminal.clone(),
        });
        Self::mark_refunded(&mut b, amount);
        self.bill_event(&b, BillEventKind::Refunded, amount, Some(channel));
        self.bills.insert(b.id.clone(), b);
        Ok(Effect::BalanceChanged {
            account: account.id,
            txn: self.ctx.txn,
            amount,
            balance,
        })
    }

    pub(super) fn post_bill(
        &mut self,
        bill: &BillId,
        card: &CardNo,
        kind: BillKind,
        amount: Money,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let amount = self.amount(amount)?;
        if self.bill(bill).is_some() {
            return reject(
                ReasonCode::BillAlreadyExists,
                format!("bill {bill} is already posted"),
            );
        }
        // A bill belongs to the account, whatever the state of the card HIS knows it by.
        let account = self.account_exists(self.card_exists(card)?.account)?;
        self.bills.insert(
            bill.clone(),
            Bill {
                id: bill.clone(),
                account: account.id,
                kind,
                amount,
                status: BillStatus::Unpaid,
                payment: None,
                pending_op: None,
                posted_at: self.cmd.at,
                cancelled: Money::ZERO,
                refunded: Money::ZERO,
                invoiced: false,
                declined_refund: None,
                declined_left: Money::ZERO,
            },
        );
        Ok(Effect::BillPosted {
            bill: bill.clone(),
            account: account.id,
        })
    }

    /// An insured bill: the self-pay part is the bill (what the patient pays, by every way a
    /// bill is paid); the split is kept beside it for 医保对账 (`InsuranceSplit::check` says
    /// which splits a bill may carry). One bill per settlement.
    fn post_insured_bill(
        &mut self,
        bill: &BillId,
        card: &CardNo,
        kind: BillKind,
        split: &InsuranceSplit,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        if self.bill(bill).is_some() {
            return reject(
                ReasonCode::BillAlreadyExists,
                format!("bill {bill} is already posted"),
            );
        }
        if let Err(why) = split.check(self.ctx.rules.single_txn_limit) {
            return reject(ReasonCode::InvalidAmount, why);
        }
        if let Some(other) = self.base.bill_of_settlement(&split.settlement) {
            return reject(
                ReasonCode::InsuranceSettlementExists,
                format!(
                    "insurance settlement {} is bill {other}'s already",
                    split.settlement
                ),
            );
        }
        let effect = self.post_bill(bill, card, kind, split.self_pay)?;
        let Effect::BillPosted { account, .. } = effect else {
            unreachable!("posting a bill answers BillPosted")
        };
        self.insured_bills.insert(
            bill.clone(),
            InsuredBill {
                bill: bill.clone(),
                account,
                split: split.clone(),
                posted_at: self.cmd.at,
                reversed_at: None,
            },
        );
        Ok(effect)
    }
}
