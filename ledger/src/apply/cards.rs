//! The rules of cards: issuing (发卡建档), loss (挂失/解挂) and replacement (补卡).

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The cards commands.
    pub(super) fn execute_cards(&mut self) -> Rule<Effect> {
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::IssueCard {
                card,
                card_kind,
                holder,
                first_deposit,
            } => {
                let terminal = self.terminal_allowed()?;
                self.issue_card(terminal, card, *card_kind, holder, *first_deposit)
            }
            CommandBody::ReportLoss { card, person } => {
                self.terminal_allowed()?;
                let (mut c, _) = self.holder_card(card, person)?;
                match c.status {
                    CardStatus::Active => {}
                    CardStatus::Lost => {
                        return reject(
                            ReasonCode::CardLost,
                            format!("card {card} is already reported lost"),
                        );
                    }
                    CardStatus::Replaced => {
                        return reject(
                            ReasonCode::CardReplaced,
                            format!("card {card} was replaced"),
                        );
                    }
                }
                c.status = CardStatus::Lost;
                self.cards.insert(c.no.clone(), c);
                Ok(Effect::CardStatusChanged {
                    card: card.clone(),
                    status: CardStatus::Lost,
                })
            }
            CommandBody::CancelLoss { card, person } => {
                self.terminal_allowed()?;
                let (mut c, _) = self.holder_card(card, person)?;
                match c.status {
                    CardStatus::Lost => {}
                    CardStatus::Active => {
                        return reject(
                            ReasonCode::CardNotLost,
                            format!("card {card} is not reported lost"),
                        );
                    }
                    CardStatus::Replaced => {
                        return reject(
                            ReasonCode::CardReplaced,
                            format!("card {card} was replaced"),
                        );
                    }
                }
                c.status = CardStatus::Active;
                self.cards.insert(c.no.clone(), c);
                Ok(Effect::CardStatusChanged {
                    card: card.clone(),
                    status: CardStatus::Active,
                })
            }
            CommandBody::ReplaceCard {
                old_card,
                new_card,
                person,
            } => {
                self.terminal_allowed()?;
                let (mut old, account) = self.holder_card(old_card, person)?;
                if old.status == CardStatus::Replaced {
                    return reject(
                        ReasonCode::CardReplaced,
                        format!("card {old_card} was already replaced"),
                    );
                }
                if self.card(new_card).is_some() {
                    return reject(
                        ReasonCode::CardAlreadyExists,
                        format!("card {new_card} is already issued"),
                    );
                }
                old.status = CardStatus::Replaced;
                let new = Card {
                    no: new_card.clone(),
                    kind: old.kind,
                    account: account.id,
                    status: CardStatus::Active,
                };
                self.cards.insert(old.no.clone(), old);
                self.cards.insert(new.no.clone(), new);
                Ok(Effect::CardReplaced {
                    old_card: old_card.clone(),
                    new_card: new_card.clone(),
                    account: account.id,
                })
            }
            other => unreachable!("{} is not one of the cards commands", other.name()),
        }
    }

    pub(super) fn issue_card(
        &mut self,
        terminal: Option<Terminal>,
        card: &CardNo,
        card_kind: CardKind,
        holder: &Holder,
        first_deposit: Option<Money>,
    ) -> Rule<Effect> {
        holder
            .check()
            .or_else(|e| reject(ReasonCode::InvalidHolder, e))?;
        if let Some(deposit) = first_deposit {
            self.require_shift_at_window(&terminal)?;
            let deposit = self.amount(deposit)?;
            if deposit < self.ctx.rules.min_first_deposit {
                return reject(
                    ReasonCode::BelowMinimumDeposit,
                    format!(
                        "a first deposit is at least {}, not {deposit}",
                        self.ctx.rules.min_first_deposit
                    ),
                );
            }
            self.kiosk_cash(deposit)?;
        }
        if self.card(card).is_some() {
            return reject(
                ReasonCode::CardAlreadyExists,
                format!("card {card} is already issued"),
            );
        }
        // 实名: one account per person; a second card binds to the existing account.
        let (account, existing_account) = match self.person(&holder.person) {
            Some(id) => (self.account_exists(id)?, true),
            None => {
                let account = Account {
                    id: AccountId(self.ctx.txn.0),
                    holder: holder.clone(),
                    balance: Money::ZERO,
                    overdraft_limit: Money::ZERO,
                    status: AccountStatus::Active,
                    version: 0,
                    opened_at: self.cmd.at,
                    last_activity_at: self.cmd.at,
                };
                self.persons.insert(holder.person.clone(), account.id);
                (account, false)
            }
        };
        if first_deposit.is_some() {
            self.active(account.clone())?;
        }
        self.cards.insert(
            card.clone(),
            Card {
                no: card.clone(),
                kind: card_kind,
                account: account.id,
                status: CardStatus::Active,
            },
        );
        let mut balance = account.balance;
        self.put_account(account.clone());
        if let Some(deposit) = first_deposit {
            balance = self.post(Movement {
                account: account.id,
                kind: EntryKind::CashDeposit,
                channel: Channel::Cash,
                amount: deposit,
                bill: None,
                bank_ref: None,
                terminal: self.cmd.terminal.clone(),
            });
        }
        Ok(Effect::CardIssued {
            account: account.id,
            card: card.clone(),
            existing_account,
            balance,
        })
    }
}
