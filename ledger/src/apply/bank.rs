//! The rules of bank and channel operations (sagas): started Pending before the bank is called, then settled by its answer.

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The bank commands.
    pub(super) fn execute_bank(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::StartBankOp {
                card,
                external,
                purpose,
                amount,
            } => self.start_bank_op(card, external, purpose, *amount),
            CommandBody::CompleteBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Completed, bank_note),
            CommandBody::DeclineBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Declined, bank_note),
            CommandBody::MarkBankOpInDoubt {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::InDoubt, bank_note),
            CommandBody::ReverseBankOp {
                bank_ref,
                bank_note,
            } => self.settle_bank_op(bank_ref, BankOpState::Reversed, bank_note),
            other => unreachable!("{} is not one of the bank commands", other.name()),
        }
    }

    /// The first step of a saga: checks, records the operation Pending, and for a withdrawal
    /// takes the money from the account now (it is given back if the bank declines).
    pub(super) fn start_bank_op(
        &mut self,
        card: &CardNo,
        external: &External,
        purpose: &BankPurpose,
        amount: Option<Money>,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let (_, account) = self.card_in_use(card)?;
        let bank_ref = BankRef::for_txn(self.ctx.txn);
        let no_amount_for_bill = |amount: Option<Money>| match amount {
            None => Ok(()),
            Some(a) => reject(
                ReasonCode::InvalidAmount,
                format!("a bill's payment is the bill's amount; do not send one ({a})"),
            ),
        };
        let (kind, amount) = match purpose {
            BankPurpose::TopUp => {
                let Some(a) = amount else {
                    return reject(ReasonCode::InvalidAmount, "a top-up needs an amount");
                };
                (BankOpKind::Debit, self.amount(a)?)
            }
            BankPurpose::PayBill { bill } => {
                no_amount_for_bill(amount)?;
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                self.payable(&b)?;
                let amount = b.amount;
                b.pending_op = Some(bank_ref.clone());
                self.bills.insert(b.id.clone(), b);
                (BankOpKind::Debit, amount)
            }
            BankPurpose::Refund { bill } => {
                let mut b = self.bill_exists(bill)?;
                self.bill_of(&b, account.id)?;
                let (payment, left) = self.refundable(&b)?;
                self.same_channel_as_payment(&payment, external, bill)?;
                let amount = self.refund_amount(&b, left, amount)?;
                b.pending_op = Some(bank_ref.clone());
                b.declined_refund = None;
                b.declined_left = Money::ZERO;
                self.bills.insert(b.id.clone(), b);
                (BankOpKind::Credit, amount)
            }
            BankPurpose::EpisodeDeposit { episode } => {
                let Some(a) = amount else {
                    return reject(ReasonCode::InvalidAmount, "a deposit needs an amount");
                };
                let amount = self.amount(a)?;
                let mut ep = self.episode_takes_deposit(episode)?;
                if ep.account != account.id {
                    return reject(
                        ReasonCode::EpisodeNotFound,
                        format!("no inpatient episode {episode} for the patient of card {card}"),
                    );
                }
                ep.deposits_in_flight += 1;
                self.episodes.insert(ep.id.clone(), ep);
                (BankOpKind::Debit, amount)
            }
            // Only a discharge starts these (`SettleEpisode`); `terminal_allowed` refused it.
            BankPurpose::EpisodeRefund { .. } => {
                return reject(
                    ReasonCode::TerminalNotAllowed,
                    "an inpatient refund is started by the discharge settlement only",
                );
            }
            BankPurpose::Withdraw => {
                let amount = self.withdrawal_amount(&account, amount)?;
                self.post(Movement {
                    account: account.id,
                    kind: EntryKind::Withdrawal,
                    channel: external.channel(),
                    amount,
                    bill: None,
                    bank_ref: Some(bank_ref.clone()),
                    terminal: self.cmd.terminal.clone(),
                });
                (BankOpKind::Credit, amount)
            }
        };
        self.bank_ops.insert(
            bank_ref.clone(),
            BankOp {
                bank_ref: bank_ref.clone(),
                kind,
                purpose: purpose.clone(),
                external: external.clone(),
                account: account.id,
                amount,
                state: BankOpState::Pending,
                request: self.cmd.request.clone(),
                terminal: self.cmd.terminal.clone(),
                steps: 0,
                bank_note: String::new(),
                started_at: self.cmd.at,
                updated_at: self.cmd.at,
            },
        );
        let balance = self.account(account.id).expect("read above").balance;
        Ok(Effect::BankOpStarted {
            bank_ref,
            kind,
            account: account.id,
            amount,
            balance,
        })
    }

    /// Online refunds go back only the way the bill was paid: the same card or channel account.
    pub(super) fn same_channel_as_payment(
        &self,
        payment: &Payment,
        external: &External,
        bill: &BillId,
    ) -> Rule<()> {
        let paid_by = payment
            .bank_ref
            .as_ref()
            .and_then(|r| self.bank_op(r))
            .map(|op| op.external);
        if paid_by.as_ref() != Some(external) {
            return reject(
                ReasonCode::RefundChannelNotAllowed,
                format!(
                    "bill {bill} was paid by {:?}; an online refund goes only to the card or channel that paid",
                    payment.channel
                ),
            );
        }
        Ok(())
    }

    /// The later steps of a saga. Pending may go anywhere; InDoubt may be completed (the status
    /// query found it) or reversed; Completed, Declined and Reversed are final.
    pub(super) fn settle_bank_op(
        &mut self,
        bank_ref: &BankRef,
        to: BankOpState,
        bank_note: &str,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        let Some(mut op) = self.bank_op(bank_ref) else {
            return reject(
                ReasonCode::BankOpNotFound,
                format!("bank operation {bank_ref} is not known"),
            );
        };
        let allowed = match (op.state, to) {
            (BankOpState::Pending, _) => true,
            (BankOpState::InDoubt, BankOpState::InDoubt) => true,
            (BankOpState::InDoubt, BankOpState::Completed | BankOpState::Reversed) => true,
            // A decline that arrives after we stopped waiting still ends the operation.
            (BankOpState::InDoubt, BankOpState::Declined) => true,
            _ => false,
        };
        if !allowed {
            return reject(
                ReasonCode::BankOpAlreadyFinal,
                format!(
                    "bank operation {bank_ref} is {:?} and cannot become {to:?}",
                    op.state
                ),
            );
        }
        let channel = op.external.channel();
        let account_id = op.account;
        // The account exists: the operation was started against it.
        let balance_before = self.account_exists(account_id)?.balance;
        let movement = |kind| Movement {
            account: account_id,
            kind,
            channel,
            amount: op.amount,
            bill: match &op.purpose {
                BankPurpose::PayBill { bill } | BankPurpose::Refund { bill } => Some(bill.clone()),
                _ => None,
            },
            bank_ref: Some(bank_ref.clone()),
            terminal: op.terminal.clone(),
        };
        let mut balance = balance_before;
        match to {
            BankOpState::Completed => match &op.purpose {
                BankPurpose::TopUp => balance = self.post(movement(EntryKind::TopUp)),
                BankPurpose::PayBill { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.status = BillStatus::Paid;
                    b.pending_op = None;
                    b.payment = Some(Payment {
                        channel,
                        txn: self.ctx.txn,
                        bank_ref: Some(bank_ref.clone()),
                        terminal: op.terminal.clone(),
                        at: self.cmd.at,
                    });
                    self.bill_event(&b, BillEventKind::Paid, op.amount, Some(channel));
                    self.bills.insert(b.id.clone(), b);
                    balance = self.post(movement(EntryKind::ExternalBillPayment));
                }
                BankPurpose::Refund { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    Self::mark_refunded(&mut b, op.amount);
                    b.pending_op = None;
                    self.bill_event(&b, BillEventKind::Refunded, op.amount, Some(channel));
                    self.bills.insert(b.id.clone(), b);
                    balance = self.post(movement(EntryKind::ExternalRefund));
                }
                // The money left the account when the withdrawal started.
                BankPurpose::Withdraw => {}
                BankPurpose::EpisodeDeposit { episode } => {
                    let mut ep = self.episode_exists(episode)?;
                    ep.deposits_in_flight = ep.deposits_in_flight.saturating_sub(1);
                    balance = self.add_episode_deposit(
                        &mut ep,
                        op.amount,
                        channel,
                        Some(bank_ref.clone()),
                        None,
                        op.terminal.clone(),
                    );
                    self.episodes.insert(ep.id.clone(), ep);
                }
                BankPurpose::EpisodeRefund { episode, deposit } => {
                    balance = self.settle_episode_refund(&op, episode, *deposit, true)?;
                }
            },
            BankOpState::Declined | BankOpState::Reversed => match &op.purpose {
                BankPurpose::TopUp => {}
                BankPurpose::PayBill { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.pending_op = None;
                    self.bills.insert(b.id.clone(), b);
                }
                // The card did not take it: this much may go into the account or out in cash.
                BankPurpose::Refund { bill } => {
                    let mut b = self.bill_exists(bill)?;
                    b.pending_op = None;
                    b.declined_refund = Some(bank_ref.clone());
                    b.declined_left = op.amount;
                    self.bills.insert(b.id.clone(), b);
                }
                BankPurpose::Withdraw => {
                    balance = self.post(movement(EntryKind::WithdrawalReturned));
                }
                BankPurpose::EpisodeDeposit { episode } => {
                    let mut ep = self.episode_exists(episode)?;
                    ep.deposits_in_flight = ep.deposits_in_flight.saturating_sub(1);
                    self.episodes.insert(ep.id.clone(), ep);
                }
                BankPurpose::EpisodeRefund { episode, deposit } => {
                    balance = self.settle_episode_refund(&op, episode, *deposit, false)?;
                }
            },
            BankOpState::InDoubt | BankOpState::Pending => {}
        }
        op.state = to;
        op.steps += 1;
        op.bank_note = bank_note.chars().take(128).collect();
        op.updated_at = self.cmd.at;
        self.bank_ops.insert(bank_ref.clone(), op);
        Ok(Effect::BankOpSettled {
            bank_ref: bank_ref.clone(),
            state: to,
            account: account_id,
            balance,
        })
    }
}
