//! The rules of inpatient episodes (住院): admission by HIS, deposits (住院预交金) in cash,
//! from a prepaid account or by card and channel (those are bank operations, see `bank.rs`),
//! HIS's daily charges (日清单) and final amount, and the discharge settlement (出院结算).
//!
//! An episode's money is its deposits. Charges are HIS's running total: they move no money
//! until the settlement takes the final amount from the deposits as the hospital's (recorded in
//! the episode, not as a journal entry: a command posts at most one entry per account, and the
//! settlement's shortfall or surplus is that entry). What is
//! left goes back to the cards and channels that paid, oldest deposit first, and the rest into
//! the patient's account or in cash at a window; what is short comes from the account or is
//! deposited first.

use super::*;

/// The largest charge or final amount one episode may carry: a long stay with surgery runs to
/// hundreds of thousands of yuan, far above the single-transaction limit of a payment (the
/// bound of an insured bill's parts together too).
fn max_episode_amount() -> Money {
    InsuranceSplit::max_total()
}

impl<V: StateView> Staged<'_, V> {
    /// The episode commands.
    pub(super) fn execute_episodes(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::OpenEpisode {
                episode,
                card,
                ward,
                reminder_below,
            } => self.open_episode(episode, card, ward, *reminder_below),
            CommandBody::DepositToEpisode {
                episode,
                amount,
                from,
            } => self.deposit_to_episode(episode, *amount, from),
            CommandBody::PostEpisodeCharges { episode, amount } => {
                self.terminal_allowed()?;
                let amount = self.episode_amount(*amount)?;
                let mut ep = self.episode_exists(episode)?;
                self.episode_in(&ep, &[EpisodeStatus::Open], "take charges")?;
                ep.charges = ep.charges.checked_add(amount).ok_or_else(|| {
                    Rejection::new(ReasonCode::InvalidAmount, "charges out of range")
                })?;
                ep.charge_posts += 1;
                self.episode_changed(ep, None)
            }
            CommandBody::FinalizeEpisode {
                episode,
                final_amount,
            } => {
                self.terminal_allowed()?;
                if final_amount.is_negative() || *final_amount > max_episode_amount() {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "a final amount is 0 to {}, not {final_amount}",
                            max_episode_amount()
                        ),
                    );
                }
                let mut ep = self.episode_exists(episode)?;
                self.episode_in(&ep, &[EpisodeStatus::Open], "take its final amount")?;
                ep.status = EpisodeStatus::Final;
                ep.final_amount = Some(*final_amount);
                self.episode_changed(ep, None)
            }
            CommandBody::SettleEpisode {
                episode,
                card,
                rest_to,
                shortfall_from_account,
            } => self.settle_episode(episode, card, *rest_to, *shortfall_from_account),
            other => unreachable!("{} is not one of the episode commands", other.name()),
        }
    }

    pub(super) fn episode_exists(&self, id: &AdmissionId) -> Rule<Episode> {
        self.episode(id).ok_or_else(|| {
            Rejection::new(
                ReasonCode::EpisodeNotFound,
                format!("no inpatient episode {id}"),
            )
        })
    }

    fn episode_in(&self, ep: &Episode, states: &[EpisodeStatus], to: &str) -> Rule<()> {
        if !states.contains(&ep.status) {
            return reject(
                ReasonCode::EpisodeNotOpen,
                format!("episode {} is {:?} and cannot {to}", ep.id, ep.status),
            );
        }
        Ok(())
    }

    fn episode_amount(&self, amount: Money) -> Rule<Money> {
        amount
            .check_positive(max_episode_amount())
            .map_err(|e| Rejection::new(ReasonCode::InvalidAmount, e.to_string()))
    }

    /// A deposit may go into an episode not yet discharged, up to its limit of deposits.
    pub(super) fn episode_takes_deposit(&self, id: &AdmissionId) -> Rule<Episode> {
        let ep = self.episode_exists(id)?;
        self.episode_in(
            &ep,
            &[EpisodeStatus::Open, EpisodeStatus::Final],
            "take a deposit",
        )?;
        if ep.deposits.len() + ep.deposits_in_flight as usize >= Episode::MAX_DEPOSITS {
            return reject(
                ReasonCode::InvalidAmount,
                format!(
                    "episode {} has {} deposits, the most one episode takes",
                    ep.id,
                    Episode::MAX_DEPOSITS
                ),
            );
        }
        Ok(ep)
    }

    /// Adds a deposit that has been paid to the episode and journals it: cash, card and
    /// channel as `EpisodeDeposit` on the patient's account (balance untouched); from a
    /// prepaid account as `EpisodeDepositFromAccount` on the payer's. Returns the balance of
    /// the account journaled.
    pub(super) fn add_episode_deposit(
        &mut self,
        ep: &mut Episode,
        amount: Money,
        channel: Channel,
        bank_ref: Option<BankRef>,
        from_account: Option<AccountId>,
        terminal: TerminalId,
    ) -> Money {
        let (account, kind) = match from_account {
            Some(payer) => (payer, EntryKind::EpisodeDepositFromAccount),
            None => (ep.account, EntryKind::EpisodeDeposit),
        };
        let balance = self.post(Movement {
            account,
            kind,
            channel,
            amount,
            bill: Some(episode_bill(&ep.id)),
            bank_ref: bank_ref.clone(),
            terminal: terminal.clone(),
        });
        ep.deposited = ep
            .deposited
            .checked_add(amount)
            .expect("deposits within range");
        ep.deposits.push(EpisodeDeposit {
            seq: ep.deposits.len() as u32 + 1,
            txn: self.ctx.txn,
            amount,
            channel,
            bank_ref,
            from_account,
            refunded_online: Money::ZERO,
            terminal,
            at: self.cmd.at,
        });
        balance
    }

    fn open_episode(
        &mut self,
        episode: &AdmissionId,
        card: &CardNo,
        ward: &WardId,
        reminder_below: Money,
    ) -> Rule<Effect> {
        self.terminal_allowed()?;
        if reminder_below.is_negative() || reminder_below > max_episode_amount() {
            return reject(
                ReasonCode::InvalidAmount,
                format!(
                    "a reminder threshold is 0 to {}, not {reminder_below}",
                    max_episode_amount()
                ),
            );
        }
        if self.episode(episode).is_some() {
            return reject(
                ReasonCode::EpisodeExists,
                format!("episode {episode} is already open"),
            );
        }
        // The episode belongs to the account, whatever the state of the card HIS knows it by.
        let account = self.account_exists(self.card_exists(card)?.account)?;
        self.episodes.insert(
            episode.clone(),
            Episode {
                id: episode.clone(),
                account: account.id,
                ward: ward.clone(),
                reminder_below,
                status: EpisodeStatus::Open,
                deposits: Vec::new(),
                deposited: Money::ZERO,
                charges: Money::ZERO,
                charge_posts: 0,
                final_amount: None,
                refunded: Money::ZERO,
                refunding: Money::ZERO,
                deposits_in_flight: 0,
                opened_at: self.cmd.at,
                discharged_at: None,
            },
        );
        Ok(Effect::EpisodeOpened {
            episode: episode.clone(),
            account: account.id,
        })
    }

    fn deposit_to_episode(
        &mut self,
        episode: &AdmissionId,
        amount: Money,
        from: &EpisodeFunds,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let amount = self.amount(amount)?;
        let mut ep = self.episode_takes_deposit(episode)?;
        let here = self.cmd.terminal.clone();
        let balance = match from {
            EpisodeFunds::Cash => {
                self.kiosk_cash(amount)?;
                self.add_episode_deposit(&mut ep, amount, Channel::Cash, None, None, here);
                None
            }
            EpisodeFunds::Account { card } => {
                let (_, payer) = self.card_in_use(card)?;
                // Another person's money goes in only where a cashier sees who pays.
                if payer.id != ep.account && self.cmd.terminal.kind() != TerminalKind::Window {
                    return reject(
                        ReasonCode::TerminalNotAllowed,
                        format!(
                            "card {card} is not the patient's: a relative's account pays into episode {episode} only at a window"
                        ),
                    );
                }
                // A deposit is the payer's own money: never the overdraft (绿色通道).
                if amount > payer.balance {
                    return reject(
                        ReasonCode::InsufficientFunds,
                        format!(
                            "account {} holds {}, a deposit of {amount} needs more",
                            payer.id, payer.balance
                        ),
                    );
                }
                Some(self.add_episode_deposit(
                    &mut ep,
                    amount,
                    Channel::Account,
                    None,
                    Some(payer.id),
                    here,
                ))
            }
        };
        self.episode_changed(ep, balance)
    }

    fn episode_changed(&mut self, ep: Episode, balance: Option<Money>) -> Rule<Effect> {
        let effect = Effect::EpisodeChanged {
            episode: ep.id.clone(),
            txn: self.ctx.txn,
            status: ep.status,
            deposited: ep.deposited,
            unused: ep.unused(),
            balance,
        };
        self.episodes.insert(ep.id.clone(), ep);
        Ok(effect)
    }

    /// 出院结算. Every amount is decided here, in one command: the shortfall taken, each online
    /// refund started (its bank operation Pending, driven by the sagas like any other, so a
    /// crash or a new leader finishes it once), the rest paid. Nothing is left half-settled.
    fn settle_episode(
        &mut self,
        episode: &AdmissionId,
        card: &CardNo,
        rest_to: RefundTo,
        shortfall_from_account: bool,
    ) -> Rule<Effect> {
        let terminal = self.terminal_allowed()?;
        self.require_shift_at_window(&terminal)?;
        let mut ep = self.episode_exists(episode)?;
        // The patient presents their card: in use (not lost, the account not frozen) and the
        // episode's.
        let (_, patient) = self.card_in_use(card)?;
        if patient.id != ep.account {
            return reject(
                ReasonCode::EpisodeNotFound,
                format!("no inpatient episode {episode} for the patient of card {card}"),
            );
        }
        self.episode_in(&ep, &[EpisodeStatus::Final], "be settled")?;
        if ep.deposits_in_flight > 0 {
            return reject(
                ReasonCode::EpisodeOperationInProgress,
                format!(
                    "episode {episode} has {} deposit(s) by card or channel waiting for the bank",
                    ep.deposits_in_flight
                ),
            );
        }
        let final_amount = ep
            .final_amount
            .expect("a final episode has its final amount");
        let here = self.cmd.terminal.clone();
        let mut collected = Money::ZERO;
        if ep.deposited < final_amount {
            let short = final_amount
                .checked_sub(ep.deposited)
                .expect("amounts within range");
            if !shortfall_from_account {
                return reject(
                    ReasonCode::EpisodeShortfall,
                    format!(
                        "episode {episode}: deposits {} do not cover the final amount {final_amount}; collect {short} first (a deposit in cash, by card or channel) or settle from the account",
                        ep.deposited
                    ),
                );
            }
            // The patient's own account, overdraft (绿色通道) included: it is a charge.
            let account = self.active(self.account_exists(ep.account)?)?;
            self.debit_from_account(&account, short)?;
            self.add_episode_deposit(
                &mut ep,
                short,
                Channel::Account,
                None,
                Some(account.id),
                here.clone(),
            );
            collected = short;
        }
        let bill = episode_bill(episode);
        let mut left = ep
            .deposited
            .checked_sub(final_amount)
            .expect("amounts within range");
        // Back online first, oldest deposit first, each up to what it brought.
        let mut online = Vec::new();
        for i in 0..ep.deposits.len() {
            if !left.is_positive() {
                break;
            }
            let d = &ep.deposits[i];
            let Some(paid_by) = d.bank_ref.as_ref().and_then(|r| self.bank_op(r)) else {
                continue;
            };
            let part = if d.amount < left { d.amount } else { left };
            let bank_ref = BankRef::for_txn_part(self.ctx.txn, online.len() as u16 + 1);
            self.bank_ops.insert(
                bank_ref.clone(),
                BankOp {
                    bank_ref: bank_ref.clone(),
                    kind: BankOpKind::Credit,
                    purpose: BankPurpose::EpisodeRefund {
                        episode: episode.clone(),
                        deposit: d.seq,
                    },
                    external: paid_by.external,
                    account: ep.account,
                    amount: part,
                    state: BankOpState::Pending,
                    request: self.cmd.request.clone(),
                    terminal: here.clone(),
                    steps: 0,
                    bank_note: String::new(),
                    started_at: self.cmd.at,
                    updated_at: self.cmd.at,
                },
            );
            ep.deposits[i].refunded_online = part;
            ep.refunding = ep.refunding.checked_add(part).expect("within range");
            left = left.checked_sub(part).expect("within range");
            online.push((bank_ref, part));
        }
        if left.is_positive() {
            let (kind, channel) = match rest_to {
                RefundTo::Account => (EntryKind::EpisodeRefundToAccount, Channel::Account),
                // A window pays out at most a transaction's limit in cash; more goes into the
                // account (and out by withdrawal or to a card).
                RefundTo::Cash if left > self.ctx.rules.single_txn_limit => {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!(
                            "{left} is more than a window pays out in cash ({}): settle into the account",
                            self.ctx.rules.single_txn_limit
                        ),
                    );
                }
                RefundTo::Cash => (EntryKind::EpisodeRefund, Channel::Cash),
            };
            self.post(Movement {
                account: ep.account,
                kind,
                channel,
                amount: left,
                bill: Some(bill),
                bank_ref: None,
                terminal: here,
            });
            ep.refunded = ep.refunded.checked_add(left).expect("within range");
        }
        ep.status = EpisodeStatus::Discharged;
        ep.discharged_at = Some(self.cmd.at);
        let balance = self.account_exists(ep.account)?.balance;
        self.episodes.insert(ep.id.clone(), ep);
        Ok(Effect::EpisodeSettled {
            episode: episode.clone(),
            txn: self.ctx.txn,
            final_amount,
            collected,
            online,
            rest: if left.is_positive() {
                left
            } else {
                Money::ZERO
            },
            rest_to,
            balance,
        })
    }

    /// The bank answered an online refund of a discharge: approved, it is journaled as paid
    /// back; declined or reversed, the money goes into the patient's account instead (a closed
    /// card cannot hold it up).
    pub(super) fn settle_episode_refund(
        &mut self,
        op: &BankOp,
        episode: &AdmissionId,
        deposit: u32,
        approved: bool,
    ) -> Rule<Money> {
        let mut ep = self.episode_exists(episode)?;
        let (kind, channel) = if approved {
            (EntryKind::EpisodeRefund, op.external.channel())
        } else {
            if let Some(d) = ep.deposits.iter_mut().find(|d| d.seq == deposit) {
                d.refunded_online = d
                    .refunded_online
                    .checked_sub(op.amount)
                    .expect("within range");
            }
            (EntryKind::EpisodeRefundToAccount, Channel::Account)
        };
        let balance = self.post(Movement {
            account: op.account,
            kind,
            channel,
            amount: op.amount,
            bill: Some(episode_bill(episode)),
            bank_ref: approved.then(|| op.bank_ref.clone()),
            terminal: op.terminal.clone(),
        });
        ep.refunding = ep.refunding.checked_sub(op.amount).expect("within range");
        ep.refunded = ep.refunded.checked_add(op.amount).expect("within range");
        self.episodes.insert(ep.id.clone(), ep);
        Ok(balance)
    }
}

/// Episode entries carry the admission id where bill entries carry the bill: both are HIS ids
/// of one shape, and the entry kind says which it is.
pub(super) fn episode_bill(id: &AdmissionId) -> BillId {
    BillId::parse(id.as_str()).expect("an admission id has a bill id's shape")
}
