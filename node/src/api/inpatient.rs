//! InpatientService: episodes (住院) from admission to the discharge settlement (出院结算).

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use yinyi_actors::{Backend, EntityKey};
use yinyi_api::error::status_with_reason;
use yinyi_api::v1::episode_deposit_request::From as DepositFrom;
use yinyi_api::v1::inpatient_service_client::InpatientServiceClient;
use yinyi_api::v1::inpatient_service_server::InpatientService;
use yinyi_api::v1::*;
use yinyi_ledger::{AdmissionId, CommandBody, Effect, EpisodeFunds, Money, TerminalId, WardId};

use super::convert::{self, reason};
use super::payment::{bank_card, bank_link_missing, saga_wait, third_party};
use super::{Gateway, unexpected};
use crate::lead_or_forward;

pub struct Inpatients {
    pub gateway: Arc<Gateway>,
}

/// A ward's reminder threshold when HIS sends none.
const DEFAULT_REMINDER_BELOW: i64 = 1_000;

fn admission_id(value: &str) -> Result<AdmissionId, Status> {
    AdmissionId::parse(convert::required("admission_id", value)?)
        .map_err(|e| convert::invalid(reason::INVALID_ID, format!("admission_id: {e}")))
}

fn ward_id(value: &str) -> Result<WardId, Status> {
    WardId::parse(convert::required("ward_id", value)?)
        .map_err(|e| convert::invalid(reason::INVALID_ID, format!("ward_id: {e}")))
}

/// The most an episode's charges, final amount or reminder threshold may be (a stay's charges
/// run far above a payment's single-transaction limit; the ledger checks the same bound).
fn episode_limit() -> Money {
    Money::from_yuan(10_000_000)
}

fn episode_amount(field: &str, value: &str) -> Result<Money, Status> {
    convert::amount(field, value, episode_limit())
}

/// An amount that may be zero, up to the episode limit.
fn episode_total(field: &str, value: &str) -> Result<Money, Status> {
    let money = convert::non_negative(field, value)?;
    if money > episode_limit() {
        return Err(convert::invalid(
            reason::INVALID_AMOUNT,
            format!("{field}: {money} is above {}", episode_limit()),
        ));
    }
    Ok(money)
}

fn episode_status(s: yinyi_ledger::EpisodeStatus) -> String {
    convert::screaming(&s)
}

/// The episode as the API shows it.
pub fn episode(e: &yinyi_ledger::Episode) -> Episode {
    Episode {
        admission_id: e.id.to_string(),
        account_id: e.account.to_string(),
        ward_id: e.ward.to_string(),
        status: episode_status(e.status),
        reminder_below: convert::money(e.reminder_below),
        deposited: convert::money(e.deposited),
        charges: convert::money(e.charges),
        unused: convert::money(e.unused()),
        final_amount: e.final_amount.map_or_else(String::new, convert::money),
        refunded: convert::money(e.refunded),
        refunding: convert::money(e.refunding),
        held: convert::money(e.held()),
        needs_reminder: e.needs_reminder(),
        deposits: e
            .deposits
            .iter()
            .map(|d| EpisodeDeposit {
                seq: d.seq,
                txn_id: d.txn.to_string(),
                amount: convert::money(d.amount),
                channel: convert::channel(d.channel),
                bank_ref: d
                    .bank_ref
                    .as_ref()
                    .map_or_else(String::new, |r| r.to_string()),
                from_account_id: d.from_account.map_or_else(String::new, |a| a.to_string()),
                refunded_online: convert::money(d.refunded_online),
                terminal_id: d.terminal.to_string(),
                at_ms: d.at.0,
            })
            .collect(),
        opened_at_ms: e.opened_at.0,
        discharged_at_ms: e.discharged_at.map_or(0, |t| t.0),
    }
}

impl Inpatients {
    fn stored(&self, id: &AdmissionId) -> Result<yinyi_ledger::Episode, Status> {
        self.gateway
            .backend()
            .store()
            .episode(id)
            .map_err(|e| convert::internal(format!("episode {id} is unreadable: {e}")))?
            .ok_or_else(|| {
                status_with_reason(
                    Code::NotFound,
                    "EPISODE_NOT_FOUND",
                    format!("no inpatient episode {id}"),
                )
            })
    }

    /// The actor of the episode's patient (the terminal's when the episode is not known: the
    /// ledger then answers EPISODE_NOT_FOUND).
    fn key_for_episode(&self, id: &AdmissionId, terminal: &TerminalId) -> EntityKey {
        match self.gateway.backend().store().episode(id) {
            Ok(Some(ep)) => EntityKey::Account(ep.account),
            _ => EntityKey::Terminal(terminal.clone()),
        }
    }

    /// A command about one episode, through its patient's actor; the episode as it then is.
    async fn episode_command(
        &self,
        request_id: &str,
        terminal_id: &str,
        id: &AdmissionId,
        body: CommandBody,
    ) -> Result<Response<Episode>, Status> {
        let g = &self.gateway;
        let command = g.command(request_id, terminal_id, "", body)?;
        let key = self.key_for_episode(id, &command.terminal);
        match g.submit(key, command).await? {
            Effect::EpisodeOpened { episode: e, .. }
            | Effect::EpisodeChanged { episode: e, .. } => {
                Ok(Response::new(episode(&self.stored(&e)?)))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// The episodes not yet discharged, of one ward or every ward, read linearizably.
    async fn open_episodes(&self, ward: &str) -> Result<Vec<yinyi_ledger::Episode>, Status> {
        let ward = match ward {
            "" => None,
            w => Some(ward_id(w)?),
        };
        self.gateway.read_barrier().await?;
        self.gateway
            .backend()
            .store()
            .open_episodes(ward.as_ref())
            .map_err(|e| convert::internal(format!("the episodes are unreadable: {e}")))
    }
}

#[tonic::async_trait]
impl InpatientService for Inpatients {
    async fn open_episode(
        &self,
        request: Request<OpenEpisodeRequest>,
    ) -> Result<Response<Episode>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, open_episode);
        let r = request.into_inner();
        let id = admission_id(&r.admission_id)?;
        let reminder_below = match r.reminder_below.as_str() {
            "" => Money::from_yuan(DEFAULT_REMINDER_BELOW),
            text => episode_total("reminder_below", text)?,
        };
        let body = CommandBody::OpenEpisode {
            episode: id.clone(),
            card: convert::card_no("card_no", &r.card_no)?,
            ward: ward_id(&r.ward_id)?,
            reminder_below,
        };
        self.episode_command(&r.request_id, &r.terminal_id, &id, body)
            .await
    }

    async fn deposit(
        &self,
        request: Request<EpisodeDepositRequest>,
    ) -> Result<Response<EpisodeReply>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, deposit);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let id = admission_id(&r.admission_id)?;
        let amount = convert::amount("amount", &r.amount, g.limit())?;
        let through_bank = |card_no: &str, external: Option<yinyi_ledger::External>| {
            let external = external.ok_or_else(|| {
                convert::invalid(reason::MISSING_FIELD, "the card or channel is required")
            })?;
            Ok::<_, Status>((
                convert::card_no("card_no", card_no)?,
                CommandBody::StartBankOp {
                    card: convert::card_no("card_no", card_no)?,
                    external,
                    purpose: yinyi_ledger::BankPurpose::EpisodeDeposit {
                        episode: id.clone(),
                    },
                    amount: Some(amount),
                },
            ))
        };
        let (payer, body) = match r.from {
            None => {
                return Err(convert::invalid(
                    reason::MISSING_FIELD,
                    "say where the deposit comes from: cash, payer_card_no, card or channel",
                ));
            }
            Some(DepositFrom::Cash(false)) => {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    "cash: true for a deposit in cash",
                ));
            }
            Some(DepositFrom::Cash(true)) => (
                None,
                CommandBody::DepositToEpisode {
                    episode: id.clone(),
                    amount,
                    from: EpisodeFunds::Cash,
                },
            ),
            Some(DepositFrom::PayerCardNo(card_no)) => {
                let card = convert::card_no("payer_card_no", &card_no)?;
                (
                    Some(card.clone()),
                    CommandBody::DepositToEpisode {
                        episode: id.clone(),
                        amount,
                        from: EpisodeFunds::Account { card },
                    },
                )
            }
            Some(DepositFrom::Card(c)) => {
                let (card, body) = through_bank(
                    &c.card_no,
                    bank_card(&c.bank_card_token, &c.bank_card_masked)?,
                )?;
                (Some(card), body)
            }
            Some(DepositFrom::Channel(c)) => {
                let (card, body) = through_bank(
                    &c.card_no,
                    third_party(&self.gateway, &c.provider, &c.payer)?,
                )?;
                (Some(card), body)
            }
        };
        let is_bank = matches!(body, CommandBody::StartBankOp { .. });
        if is_bank && g.bank().is_none() {
            return Err(bank_link_missing());
        }
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        // The account that moves: the payer's (a deposit from an account) or the patient's.
        let key = match &payer {
            Some(card) => g.key_for_card(card, &command.terminal),
            None => self.key_for_episode(&id, &command.terminal),
        };
        let mut reply = EpisodeReply::default();
        match g.submit(key, command).await? {
            Effect::EpisodeChanged { txn, balance, .. } => {
                reply.txn_id = txn.to_string();
                reply.payer_balance = balance.map_or_else(String::new, convert::money);
            }
            Effect::BankOpStarted { bank_ref, .. } => {
                let bank = g.bank().ok_or_else(bank_link_missing)?;
                let op = bank.drive(&bank_ref, wait).await.ok_or_else(|| {
                    convert::internal(format!("bank operation {bank_ref} vanished"))
                })?;
                reply.bank_ref = bank_ref.to_string();
                reply.bank_state = convert::screaming(&op.state);
            }
            other => return Err(unexpected(&other)),
        }
        reply.episode = Some(episode(&self.stored(&id)?));
        Ok(Response::new(reply))
    }

    async fn post_charges(
        &self,
        request: Request<EpisodeChargesRequest>,
    ) -> Result<Response<Episode>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, post_charges);
        let r = request.into_inner();
        let id = admission_id(&r.admission_id)?;
        let body = CommandBody::PostEpisodeCharges {
            episode: id.clone(),
            amount: episode_amount("amount", &r.amount)?,
        };
        self.episode_command(&r.request_id, &r.terminal_id, &id, body)
            .await
    }

    async fn finalize(
        &self,
        request: Request<FinalizeEpisodeRequest>,
    ) -> Result<Response<Episode>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, finalize);
        let r = request.into_inner();
        let id = admission_id(&r.admission_id)?;
        let body = CommandBody::FinalizeEpisode {
            episode: id.clone(),
            final_amount: episode_total("final_amount", &r.final_amount)?,
        };
        self.episode_command(&r.request_id, &r.terminal_id, &id, body)
            .await
    }

    async fn settle(
        &self,
        request: Request<SettleEpisodeRequest>,
    ) -> Result<Response<SettleEpisodeReply>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, settle);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let id = admission_id(&r.admission_id)?;
        let rest_to = match RefundDestination::try_from(r.rest_to) {
            Ok(RefundDestination::Unspecified | RefundDestination::Account) => {
                yinyi_ledger::RefundTo::Account
            }
            Ok(RefundDestination::Cash) => yinyi_ledger::RefundTo::Cash,
            _ => {
                return Err(convert::invalid(
                    reason::INVALID_ENUM,
                    "rest_to: ACCOUNT or CASH (a surplus goes back online first by itself)",
                ));
            }
        };
        let body = CommandBody::SettleEpisode {
            episode: id.clone(),
            card: convert::card_no("card_no", &r.card_no)?,
            rest_to,
            shortfall_from_account: r.shortfall_from_account,
        };
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        let key = self.key_for_episode(&id, &command.terminal);
        let Effect::EpisodeSettled {
            final_amount,
            collected,
            online,
            rest,
            ..
        } = g.submit(key, command).await?
        else {
            return Err(convert::internal("the settlement answered something else"));
        };
        // Each refund is driven now, side by side; whatever is not final when the wait ends
        // goes on in the background (and after a crash, by the new leader's recovery). The
        // settlement is done whatever happens here: without a bank link the refunds are
        // shown as they stand.
        let driven = match g.bank() {
            Some(bank) => {
                futures::future::join_all(
                    online
                        .iter()
                        .map(|(bank_ref, _)| bank.drive(bank_ref, wait)),
                )
                .await
            }
            None => online
                .iter()
                .map(|(bank_ref, _)| g.backend().bank_op(bank_ref))
                .collect(),
        };
        let refunds = online
            .iter()
            .zip(driven)
            .map(|((bank_ref, amount), op)| OnlineRefund {
                bank_ref: bank_ref.to_string(),
                amount: convert::money(*amount),
                state: op.map_or_else(String::new, |op| convert::screaming(&op.state)),
            })
            .collect();
        let ep = self.stored(&id)?;
        let balance = g
            .backend()
            .account(ep.account)
            .map_or_else(String::new, |a| convert::money(a.balance));
        Ok(Response::new(SettleEpisodeReply {
            episode: Some(episode(&ep)),
            final_amount: convert::money(final_amount),
            collected: convert::money(collected),
            online: refunds,
            rest: convert::money(rest),
            balance,
        }))
    }

    async fn get_episode(
        &self,
        request: Request<GetEpisodeRequest>,
    ) -> Result<Response<Episode>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, get_episode);
        let id = admission_id(&request.get_ref().admission_id)?;
        self.gateway.read_barrier().await?;
        Ok(Response::new(episode(&self.stored(&id)?)))
    }

    async fn reminder_list(
        &self,
        request: Request<WardRequest>,
    ) -> Result<Response<EpisodeList>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, reminder_list);
        let episodes = self.open_episodes(&request.get_ref().ward_id).await?;
        Ok(Response::new(EpisodeList {
            episodes: episodes
                .iter()
                .filter(|e| e.needs_reminder())
                .map(episode)
                .collect(),
        }))
    }

    async fn ward_report(
        &self,
        request: Request<WardRequest>,
    ) -> Result<Response<WardReportReply>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, ward_report);
        let episodes = self.open_episodes(&request.get_ref().ward_id).await?;
        let overflow = || convert::internal("ward totals out of range");
        let mut wards: BTreeMap<String, (u64, Money, Money, u64)> = BTreeMap::new();
        let (mut deposited, mut unused) = (Money::ZERO, Money::ZERO);
        for e in &episodes {
            let line = wards
                .entry(e.ward.to_string())
                .or_insert((0, Money::ZERO, Money::ZERO, 0));
            line.0 += 1;
            line.1 = line.1.checked_add(e.deposited).ok_or_else(overflow)?;
            line.2 = line.2.checked_add(e.unused()).ok_or_else(overflow)?;
            line.3 += u64::from(e.needs_reminder());
            deposited = deposited.checked_add(e.deposited).ok_or_else(overflow)?;
            unused = unused.checked_add(e.unused()).ok_or_else(overflow)?;
        }
        Ok(Response::new(WardReportReply {
            wards: wards
                .into_iter()
                .map(|(ward_id, (n, d, u, r))| WardLine {
                    ward_id,
                    episodes: n,
                    deposited: convert::money(d),
                    unused: convert::money(u),
                    on_reminder_list: r,
                })
                .collect(),
            deposited: convert::money(deposited),
            unused: convert::money(unused),
        }))
    }

    async fn discharges(
        &self,
        request: Request<DischargesRequest>,
    ) -> Result<Response<EpisodeList>, Status> {
        lead_or_forward!(self.gateway, request, InpatientServiceClient, discharges);
        let date = request.get_ref().date.clone();
        crate::api::admin::business_day(&date)?;
        self.gateway.read_barrier().await?;
        let day = date.replace('-', "");
        let episodes = self
            .gateway
            .backend()
            .store()
            .discharged_on(&day)
            .map_err(|e| convert::internal(format!("the discharges are unreadable: {e}")))?;
        Ok(Response::new(EpisodeList {
            episodes: episodes.iter().map(episode).collect(),
        }))
    }
}
