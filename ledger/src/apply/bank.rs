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
            CommandBody::AuthorizePayment {
                card,
                external,
                amount,
            } => self.authorize(card, external, *amount),
            CommandBody::CapturePayment {
                card,
                authorization,
                bill,
            } => self.capture(card, authorization, bill),
            CommandBody::ReleaseAuthorization {
                card,
                authorization,
            } => self.release(Some(card), authorization),
            CommandBody::ExpireAuthorization { authorization } => self.release(None, authorization),
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
            // Only their own commands start these; `terminal_allowed` refused it.
            BankPurpose::Authorization { .. } | BankPurpose::Capture { .. } => {
                return reject(
                    ReasonCode::TerminalNotAllowed,
                    "a hold is started by AuthorizePayment and captured by CapturePayment only",
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
        Ok(self.open_bank_op(
            bank_ref,
            kind,
            purpose.clone(),
            external.clone(),
            account.id,
            amount,
        ))
    }

    /// Records a new operation Pending under `bank_ref`, before the bank is called.
    fn open_bank_op(
        &mut self,
        bank_ref: BankRef,
        kind: BankOpKind,
        purpose: BankPurpose,
        external: External,
        account: AccountId,
        amount: Money,
    ) -> Effect {
        self.bank_ops.insert(
            bank_ref.clone(),
            BankOp {
                bank_ref: bank_ref.clone(),
                kind,
                purpose,
                external,
                account,
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
        let balance = self
            .account(account)
            .expect("an account of a card in use")
            .balance;
        Effect::BankOpStarted {
            bank_ref,
            kind,
            account,
            amount,
            balance,
        }
    }

    /// 预授权: holds the estimate at the bank; the account is untouched.
    fn authorize(&mut self, card: &CardNo, external: &External, amount: Money) -> Rule<Effect> {
        self.terminal_allowed()?;
        let (_, account) = self.card_in_use(card)?;
        let amount = self.amount(amount)?;
        let purpose = BankPurpose::Authorization {
            capture: None,
            release: false,
        };
        let bank_ref = BankRef::for_txn(self.ctx.txn);
        Ok(self.open_bank_op(
            bank_ref,
            BankOpKind::Hold,
            purpose,
            external.clone(),
            account.id,
            amount,
        ))
    }

    /// The authorization `bank_ref`, held now with nothing under way: of the patient of
    /// `card` when one is named (`None`: the cluster's own expiry), and that card in use when
    /// `in_use` (a capture pays with it; a release only gives the payer's money back, so a
    /// lost card or a frozen account does not keep the hold).
    fn held_authorization(
        &self,
        card: Option<&CardNo>,
        bank_ref: &BankRef,
        in_use: bool,
    ) -> Rule<(AccountId, BankOp)> {
        let account = match card {
            Some(card) if in_use => Some(self.card_in_use(card)?.1.id),
            Some(card) => Some(self.card_exists(card)?.account),
            None => None,
        };
        let op = self
            .bank_op(bank_ref)
            .filter(|op| {
                // A hold is the channel's that took it: another terminal cannot reach it.
                account.is_none_or(|a| op.account == a && op.terminal == self.cmd.terminal)
                    && op.purpose.is_hold()
            })
            .ok_or_else(|| {
                let whose =
                    card.map_or_else(String::new, |c| format!(" for the patient of card {c}"));
                Rejection::new(
                    ReasonCode::BankOpNotFound,
                    format!("no authorization {bank_ref}{whose}"),
                )
            })?;
        let under_way = match &op.purpose {
            BankPurpose::Authorization {
                capture: Some(capture),
                ..
            } => Some(format!("capture {capture} of it is under way or done")),
            BankPurpose::Authorization { release: true, .. } => {
                Some("its release is under way".to_string())
            }
            _ => None,
        };
        if op.state != BankOpState::Authorized || under_way.is_some() {
            return reject(
                ReasonCode::AuthorizationNotHeld,
                format!(
                    "authorization {bank_ref} is {:?}{}",
                    op.state,
                    under_way.map_or_else(String::new, |w| format!(": {w}"))
                ),
            );
        }
        Ok((op.account, op))
    }

    /// 预授权完成: pays the bill out of the hold, which must cover it; the bank frees the rest.
    fn capture(&mut self, card: &CardNo, authorization: &BankRef, bill: &BillId) -> Rule<Effect> {
        self.terminal_allowed()?;
        let (account, mut auth) = self.held_authorization(Some(card), authorization, true)?;
        let mut b = self.bill_exists(bill)?;
        self.bill_of(&b, account)?;
        self.payable(&b)?;
        if b.amount > auth.amount {
            return reject(
                ReasonCode::CaptureExceedsAuthorization,
                format!(
                    "bill {bill} is {} and authorization {authorization} holds {}",
                    b.amount, auth.amount
                ),
            );
        }
        let bank_ref = BankRef::for_txn(self.ctx.txn);
        b.pending_op = Some(bank_ref.clone());
        let amount = b.amount;
        self.bills.insert(b.id.clone(), b);
        auth.purpose = BankPurpose::Authorization {
            capture: Some(bank_ref.clone()),
            release: false,
        };
        auth.updated_at = self.cmd.at;
        let external = auth.external.clone();
        self.bank_ops.insert(authorization.clone(), auth);
        let purpose = BankPurpose::Capture {
            authorization: authorization.clone(),
            bill: bill.clone(),
        };
        Ok(self.open_bank_op(
            bank_ref,
            BankOpKind::Debit,
            purpose,
            external,
            account,
            amount,
        ))
    }

    /// 预授权撤销: the payer asks for the whole hold back (`card`), or the cluster's saga
    /// releases a hold that expired (`None`); the saga then tells the bank. Recorded first, so
    /// no capture can start once the bank may have freed the hold.
    fn release(&mut self, card: Option<&CardNo>, authorization: &BankRef) -> Rule<Effect> {
        self.terminal_allowed()?;
        // The payer asking again (a retry under a new request id, or after the cluster's
        // expiry got there first) hears that the release is under way or done.
        if let Some(card) = card
            && let Some(op) = self.bank_op(authorization).filter(|op| {
                op.purpose.is_hold()
                    && op.terminal == self.cmd.terminal
                    && self
                        .card_exists(card)
                        .is_ok_and(|c| c.account == op.account)
                    && (op.state == BankOpState::Reversed
                        || matches!(
                            op.purpose,
                            BankPurpose::Authorization {
                                capture: None,
                                release: true
                            }
                        ))
            })
        {
            return Ok(Effect::ReleaseAsked {
                bank_ref: authorization.clone(),
                account: op.account,
                amount: op.amount,
            });
        }
        let (account, mut auth) = self.held_authorization(card, authorization, false)?;
        auth.purpose = BankPurpose::Authorization {
            capture: None,
            release: true,
        };
        auth.updated_at = self.cmd.at;
        let amount = auth.amount;
        self.bank_ops.insert(authorization.clone(), auth);
        Ok(Effect::ReleaseAsked {
            bank_ref: authorization.clone(),
            account,
            amount,
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
        // The bank's approval of an authorization is a hold, not money moved.
        let authorization = op.purpose.is_hold();
        let to = match to {
            BankOpState::Completed if authorization => BankOpState::Authorized,
            to => to,
        };
        let allowed = match (op.state, to) {
            (BankOpState::Pending, _) => true,
            (BankOpState::InDoubt, BankOpState::Authorized) => true,
            // Only once its release is recorded (asked by the payer, or expired), so the bank
            // is never told to free a hold a capture may still take.
            (BankOpState::Authorized, BankOpState::Reversed) => matches!(
                op.purpose,
                BankPurpose::Authorization {
                    capture: None,
                    release: true
                }
            ),
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
                BankPurpose::PayBill { bill }
                | BankPurpose::Refund { bill }
                | BankPurpose::Capture { bill, .. } => Some(bill.clone()),
                _ => None,
            },
            bank_ref: Some(bank_ref.clone()),
            terminal: op.terminal.clone(),
        };
        let mut balance = balance_before;
        match to {
            BankOpState::Completed => match &op.purpose {
                BankPurpose::TopUp => balance = self.post(movement(EntryKind::TopUp)),
                BankPurpose::PayBill { bill } | BankPurpose::Capture { bill, .. } => {
                    if let BankPurpose::Capture { authorization, .. } = &op.purpose {
                        // Captured: the hold ends here; the bank freed the rest of it.
                        self.end_authorization(authorization, bank_ref, Some(op.amount))?;
                    }
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
                // An approved hold became `Authorized` above; nothing moves.
                BankPurpose::Authorization { .. } => {}
            },
            BankOpState::Declined | BankOpState::Reversed => match &op.purpose {
                BankPurpose::TopUp => {}
                BankPurpose::PayBill { bill } | BankPurpose::Capture { bill, .. } => {
                    if let BankPurpose::Capture { authorization, .. } = &op.purpose {
                        // Not captured: the hold stays, to be captured again or released.
                        self.end_authorization(authorization, bank_ref, None)?;
                    }
                    let mut b = self.bill_exists(bill)?;
                    b.pending_op = None;
                    self.bills.insert(b.id.clone(), b);
                }
                // A hold refused or given back: no money moved.
                BankPurpose::Authorization { .. } => {}
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
            // Held (an authorization the bank approved), or still waiting: no money moved.
            BankOpState::Authorized | BankOpState::InDoubt | BankOpState::Pending => {}
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

    /// The capture `capture` of `authorization` ended: captured (`Some` amount), the
    /// authorization is done; not captured (`None`), it is held again.
    fn end_authorization(
        &mut self,
        authorization: &BankRef,
        capture: &BankRef,
        captured: Option<Money>,
    ) -> Rule<()> {
        let Some(mut auth) = self.bank_op(authorization).filter(|auth| {
            auth.state == BankOpState::Authorized
                && matches!(&auth.purpose,
                    BankPurpose::Authorization { capture: Some(c), .. } if c == capture)
        }) else {
            return reject(
                ReasonCode::InvariantViolation,
                format!("authorization {authorization} is not held for this capture"),
            );
        };
        match captured {
            Some(amount) => {
                auth.state = BankOpState::Completed;
                auth.steps += 1;
                auth.bank_note = format!("captured {amount} by {capture}, the rest freed");
            }
            // Held again: a new generation, so the saga's next expiry is a new step (the
            // earlier one may have been refused while the capture was under way).
            None => {
                auth.purpose = BankPurpose::Authorization {
                    capture: None,
                    release: false,
                };
                auth.steps += 1;
            }
        }
        auth.updated_at = self.cmd.at;
        self.bank_ops.insert(authorization.clone(), auth);
        Ok(())
    }
}
