//! PaymentService: patients' money.

use std::sync::Arc;

use futures::StreamExt;

use tonic::{Code, Request, Response, Status};
use yinyi_actors::{Backend, EntityKey};
use yinyi_api::error::status_with_reason;
use yinyi_api::v1::payment_service_client::PaymentServiceClient;
use yinyi_api::v1::payment_service_server::PaymentService;
use yinyi_api::v1::*;
use yinyi_ledger::{AccountId, CommandBody, Effect, Holder};
use yinyi_storage::keys::{CF_JOURNAL, journal_key};

use super::convert::{self, reason};
use super::{Gateway, unexpected};
use crate::lead_or_forward;

/// The most transactions one ListTransactions call returns.
const MAX_LIST: u32 = 1000;
const DEFAULT_LIST: u32 = 50;
/// The most cards one IssueCards call carries.
const MAX_ISSUE_BATCH: usize = 1000;
/// The most bills one BatchRefund call refunds, and how many of them are under way at once.
const MAX_REFUND_BATCH: usize = 1000;
const REFUND_BATCH_CONCURRENCY: usize = 16;

pub struct Payments {
    pub gateway: Arc<Gateway>,
}

/// The receipt of a command that moved an account's money.
pub(super) fn receipt(effect: Effect) -> Result<Response<Receipt>, Status> {
    match effect {
        Effect::BalanceChanged {
            account,
            txn,
            amount,
            balance,
        } => Ok(Response::new(Receipt {
            account_id: account.to_string(),
            txn_id: txn.to_string(),
            amount: convert::money(amount),
            balance: convert::money(balance),
            bank_ref: String::new(),
            bank_state: String::new(),
        })),
        other => Err(unexpected(&other)),
    }
}

/// One bill's line of a batch refund's reply.
fn batch_result(
    bill_id: String,
    request_id: String,
    refunded: Result<Response<Receipt>, Status>,
) -> BatchRefundResult {
    let line = BatchRefundResult {
        bill_id,
        request_id,
        ..BatchRefundResult::default()
    };
    match refunded {
        Ok(receipt) => {
            let receipt = receipt.into_inner();
            let outcome = match receipt.bank_state.as_str() {
                "" | "COMPLETED" => "REFUNDED",
                "PENDING" | "IN_DOUBT" => "PENDING",
                // Declined or reversed: the card could not take it; the bill stays refundable.
                _ => "REFUSED",
            };
            BatchRefundResult {
                outcome: outcome.into(),
                amount: receipt.amount,
                reason: if outcome == "REFUSED" {
                    format!("BANK_{}", receipt.bank_state)
                } else {
                    String::new()
                },
                bank_ref: receipt.bank_ref,
                ..line
            }
        }
        Err(status) => BatchRefundResult {
            outcome: "REFUSED".into(),
            reason: yinyi_api::error::reason_of(&status)
                .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase()),
            message: status.message().to_string(),
            ..line
        },
    }
}

fn issued(effect: Effect) -> Result<IssueCardReply, Status> {
    match effect {
        Effect::CardIssued {
            account,
            card,
            existing_account,
            balance,
        } => Ok(IssueCardReply {
            account_id: account.to_string(),
            card_no: card.to_string(),
            existing_account,
            balance: convert::money(balance),
        }),
        other => Err(unexpected(&other)),
    }
}

fn card_reply(effect: Effect) -> Result<Response<CardReply>, Status> {
    match effect {
        Effect::CardStatusChanged { card, status } => Ok(Response::new(CardReply {
            card_no: card.to_string(),
            status: convert::card_status(status),
        })),
        other => Err(unexpected(&other)),
    }
}

impl Payments {
    /// Runs a money movement: an account-only one answers at once; one through the bank
    /// starts its saga and answers its state after at most `wait`.
    /// The command a refund request makes. Unspecified or ORIGINAL goes back the way the bill
    /// was paid (online for a card or channel, to the account otherwise); ACCOUNT and CASH name
    /// their destination, which the ledger allows for a bill paid from the account, or for one
    /// paid by card or channel after its online refund was declined. A whole refund into the
    /// account keeps the command it always made, so a retry sent across an upgrade is answered
    /// from its record.
    fn refund_body(
        &self,
        bill: &yinyi_ledger::BillId,
        card_no: &str,
        amount: Option<yinyi_ledger::Money>,
        destination: RefundDestination,
        declined: Option<yinyi_ledger::BankRef>,
    ) -> Result<CommandBody, Status> {
        use yinyi_ledger::RefundTo;
        let bill = bill.clone();
        let to = match destination {
            RefundDestination::Cash => RefundTo::Cash,
            RefundDestination::Account => RefundTo::Account,
            RefundDestination::Original if declined.is_some() => {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    "after a declined online refund the money goes to the ACCOUNT or in CASH, not the ORIGINAL way",
                ));
            }
            RefundDestination::Unspecified | RefundDestination::Original => {
                let paid_with = self
                    .gateway
                    .backend()
                    .bill(&bill)
                    .and_then(|b| b.payment)
                    .and_then(|p| p.bank_ref)
                    .and_then(|bank_ref| self.gateway.backend().bank_op(&bank_ref));
                match (paid_with, &declined) {
                    (Some(op), None) => {
                        return Ok(CommandBody::StartBankOp {
                            card: convert::card_no("card_no", card_no)?,
                            external: op.external,
                            purpose: yinyi_ledger::BankPurpose::Refund { bill },
                            amount,
                        });
                    }
                    _ => RefundTo::Account,
                }
            }
        };
        Ok(match (amount, to, declined) {
            (None, RefundTo::Account, None) => CommandBody::Refund { bill },
            (None, RefundTo::Account, Some(declined)) => {
                CommandBody::RefundToAccount { bill, declined }
            }
            (amount, to, declined) => CommandBody::RefundBill {
                bill,
                amount,
                to,
                declined,
            },
        })
    }

    async fn settle(
        &self,
        key: EntityKey,
        command: yinyi_ledger::Command,
        wait: std::time::Duration,
    ) -> Result<Response<Receipt>, Status> {
        let g = &self.gateway;
        let through_bank = matches!(
            command.body,
            CommandBody::StartBankOp { .. } | CommandBody::CapturePayment { .. }
        );
        if through_bank && g.bank().is_none() {
            return Err(bank_link_missing());
        }
        match g.submit(key, command).await? {
            Effect::BankOpStarted { bank_ref, .. } => {
                let bank = g.bank().ok_or_else(bank_link_missing)?;
                let op = bank.drive(&bank_ref, wait).await.ok_or_else(|| {
                    convert::internal(format!("bank operation {bank_ref} vanished"))
                })?;
                let balance = g
                    .backend()
                    .account(op.account)
                    .map_or_else(String::new, |a| convert::money(a.balance));
                Ok(Response::new(Receipt {
                    account_id: op.account.to_string(),
                    txn_id: String::new(),
                    amount: convert::money(op.amount),
                    balance,
                    bank_ref: bank_ref.to_string(),
                    bank_state: convert::screaming(&op.state),
                }))
            }
            effect => receipt(effect),
        }
    }

    /// A top-up through the bank or the channel: the saga's state after at most `wait`.
    #[allow(clippy::too_many_arguments)]
    async fn top_up(
        &self,
        request_id: &str,
        terminal_id: &str,
        operator_id: &str,
        card_no: &str,
        external: yinyi_ledger::External,
        amount: &str,
        wait: std::time::Duration,
    ) -> Result<Response<BankOpReply>, Status> {
        let g = &self.gateway;
        let card = convert::card_no("card_no", card_no)?;
        let amount = convert::amount("amount", amount, g.limit())?;
        let command = g.command(
            request_id,
            terminal_id,
            operator_id,
            CommandBody::StartBankOp {
                card: card.clone(),
                external,
                purpose: yinyi_ledger::BankPurpose::TopUp,
                amount: Some(amount),
            },
        )?;
        self.bank_op_reply(&card, command, wait).await
    }

    /// Submits `command` (it starts a bank operation, or asks a hold's release) and answers
    /// the operation's state after its saga ran at most `wait`.
    async fn bank_op_reply(
        &self,
        card: &yinyi_ledger::CardNo,
        command: yinyi_ledger::Command,
        wait: std::time::Duration,
    ) -> Result<Response<BankOpReply>, Status> {
        let g = &self.gateway;
        let Some(bank) = g.bank() else {
            return Err(bank_link_missing());
        };
        let key = g.key_for_card(card, &command.terminal);
        let bank_ref = match g.submit(key, command).await? {
            Effect::BankOpStarted { bank_ref, .. } | Effect::ReleaseAsked { bank_ref, .. } => {
                bank_ref
            }
            other => return Err(unexpected(&other)),
        };
        let op = bank
            .drive(&bank_ref, wait)
            .await
            .ok_or_else(|| convert::internal(format!("bank operation {bank_ref} vanished")))?;
        let balance = g
            .backend()
            .account(op.account)
            .map_or_else(String::new, |a| convert::money(a.balance));
        Ok(Response::new(BankOpReply {
            bank_ref: bank_ref.to_string(),
            state: convert::screaming(&op.state),
            account_id: op.account.to_string(),
            balance,
        }))
    }

    /// A loss report or its cancellation: the card's holder proves who they are.
    async fn loss(
        &self,
        r: CardRequest,
        body: impl FnOnce(yinyi_ledger::CardNo, yinyi_ledger::PersonKey) -> CommandBody,
    ) -> Result<Response<CardReply>, Status> {
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let person = convert::person_key(&r.person_key)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            body(card.clone(), person),
        )?;
        let key = g.key_for_card(&card, &command.terminal);
        card_reply(g.submit(key, command).await?)
    }

    fn issue_command(&self, r: &IssueCardRequest) -> Result<yinyi_ledger::Command, Status> {
        let g = &self.gateway;
        let holder = Holder {
            name: convert::required("holder_name", &r.holder_name)?.to_string(),
            person: convert::person_key(&r.person_key)?,
            id_masked: r.id_masked.clone(),
            phone: r.phone.clone(),
        };
        // Personal data in its masked shapes only, refused before anything is proposed; then
        // the name and phone sealed with the site's key (never sent in sealed form).
        if [&holder.name, &holder.phone]
            .iter()
            .any(|v| v.starts_with(yinyi_ledger::SEALED_PREFIX))
        {
            return Err(convert::invalid(
                "INVALID_HOLDER",
                "holder name and phone are sent in the clear (over TLS); the node seals them",
            ));
        }
        holder
            .check()
            .map_err(|e| convert::invalid("INVALID_HOLDER", e))?;
        let context = |field: &str| format!("{}/{}/{field}", r.terminal_id, r.request_id);
        let holder = Holder {
            name: g.seal(&context("name"), &holder.name),
            phone: g.seal(&context("phone"), &holder.phone),
            ..holder
        };
        let body = CommandBody::IssueCard {
            card: convert::card_no("card_no", &r.card_no)?,
            card_kind: convert::card_kind(r.card_kind)?,
            holder,
            first_deposit: convert::optional_amount("first_deposit", &r.first_deposit, g.limit())?,
        };
        g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)
    }

    /// The account a read names: by the card presented, or (staff only) by its id — such a
    /// read is recorded in the audit trail (who, which account, which method) before it is
    /// served, and not served when it cannot be recorded.
    async fn account_of(
        &self,
        card_no: &str,
        account_id: &str,
        method: &'static str,
    ) -> Result<AccountId, Status> {
        match (card_no.is_empty(), account_id.is_empty()) {
            (false, true) => {
                let card = convert::card_no("card_no", card_no)?;
                let card = self.gateway.backend().card(&card).ok_or_else(|| {
                    status_with_reason(Code::NotFound, "CARD_NOT_FOUND", format!("no card {card}"))
                })?;
                Ok(card.account)
            }
            (true, false) => {
                let id = convert::account_id(account_id)?;
                // Account ids are sequential: a channel that could read by id could walk every
                // patient. Kiosks and mobile channels read by the card presented; staff roles
                // (window, HIS, admin, auditor) may read by id, and each such read is logged.
                let caller = super::auth::Caller::current();
                if let Some(caller) = &caller {
                    if !caller.roles.iter().any(|r| READS_BY_ACCOUNT_ID.contains(r)) {
                        metrics::counter!("auth_refusals_total", "reason" => "read_by_id")
                            .increment(1);
                        return Err(status_with_reason(
                            Code::PermissionDenied,
                            "READ_BY_CARD_ONLY",
                            format!(
                                "credential {} reads an account by the card presented, not by account id",
                                caller.id
                            ),
                        ));
                    }
                    tracing::info!(credential = %caller.id, account = %id, "account read by id");
                    self.record_access(id, &caller.id, method).await?;
                }
                metrics::counter!("api_account_reads_by_id_total").increment(1);
                Ok(id)
            }
            _ => Err(convert::invalid(
                reason::MISSING_FIELD,
                "give exactly one of card_no and account_id",
            )),
        }
    }

    /// Puts a read of `account` by credential `reader` in the audit trail (`RecordAccess` from
    /// `S-READS`).
    async fn record_access(
        &self,
        account: AccountId,
        reader: &str,
        method: &'static str,
    ) -> Result<(), Status> {
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let g = &self.gateway;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        g.submit_system(
            &format!("read:{}:{nanos}:{serial}", g.consensus().id()),
            READS_TERMINAL,
            CommandBody::RecordAccess {
                account,
                reader: reader.to_string(),
                method: method.to_string(),
            },
        )
        .await?;
        Ok(())
    }

    fn account_record(&self, id: AccountId) -> Result<yinyi_ledger::Account, Status> {
        self.gateway.backend().account(id).ok_or_else(|| {
            status_with_reason(
                Code::NotFound,
                "ACCOUNT_NOT_FOUND",
                format!("no account {id}"),
            )
        })
    }
}

/// The system terminal reads by account id are recorded from.
const READS_TERMINAL: &str = "S-READS";

/// The roles that may read an account by its id (the others read by the card presented).
const READS_BY_ACCOUNT_ID: &[yinyi_ledger::Role] = &[
    yinyi_ledger::Role::Window,
    yinyi_ledger::Role::His,
    yinyi_ledger::Role::Admin,
    yinyi_ledger::Role::Auditor,
];

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn issue_card(
        &self,
        request: Request<IssueCardRequest>,
    ) -> Result<Response<IssueCardReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, issue_card);
        let command = self.issue_command(&request.into_inner())?;
        let key = EntityKey::Terminal(command.terminal.clone());
        issued(self.gateway.submit(key, command).await?).map(Response::new)
    }

    async fn issue_cards(
        &self,
        request: Request<IssueCardsRequest>,
    ) -> Result<Response<IssueCardsReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, issue_cards);
        let cards = request.into_inner().cards;
        if cards.is_empty() || cards.len() > MAX_ISSUE_BATCH {
            return Err(convert::invalid(
                reason::INVALID_REQUEST,
                format!("cards: give 1 to {MAX_ISSUE_BATCH}, not {}", cards.len()),
            ));
        }
        let mut commands = Vec::with_capacity(cards.len());
        for (i, card) in cards.iter().enumerate() {
            let command = self.issue_command(card).map_err(|s| {
                Status::with_details(
                    s.code(),
                    format!("cards[{i}]: {}", s.message()),
                    s.details().to_vec().into(),
                )
            })?;
            if command.terminal.as_str() != cards[0].terminal_id {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    format!("cards[{i}]: every card of a call must name the same terminal_id"),
                ));
            }
            commands.push(command);
        }
        let key = EntityKey::Terminal(commands[0].terminal.clone());
        let mut results = Vec::with_capacity(commands.len());
        for outcome in self.gateway.submit_batch(key, commands).await? {
            results.push(match outcome.and_then(issued) {
                Ok(reply) => IssueCardResult {
                    issued: Some(reply),
                    ..Default::default()
                },
                Err(status) => IssueCardResult {
                    issued: None,
                    reason: yinyi_api::error::reason_of(&status).unwrap_or_default(),
                    message: status.message().to_string(),
                },
            });
        }
        Ok(Response::new(IssueCardsReply { results }))
    }

    async fn deposit_cash(
        &self,
        request: Request<DepositCashRequest>,
    ) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, deposit_cash);
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let amount = convert::amount("amount", &r.amount, g.limit())?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::DepositCash {
                card: card.clone(),
                amount,
            },
        )?;
        let key = g.key_for_card(&card, &command.terminal);
        receipt(g.submit(key, command).await?)
    }

    async fn top_up_bank_card(
        &self,
        request: Request<TopUpBankCardRequest>,
    ) -> Result<Response<BankOpReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            top_up_bank_card
        );
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let external = bank_card(&r.bank_card_token, &r.bank_card_masked)?.ok_or_else(|| {
            convert::invalid(reason::MISSING_FIELD, "bank_card_token is required")
        })?;
        self.top_up(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            &r.card_no,
            external,
            &r.amount,
            wait,
        )
        .await
    }

    async fn top_up_third_party(
        &self,
        request: Request<TopUpThirdPartyRequest>,
    ) -> Result<Response<BankOpReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            top_up_third_party
        );
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let external = third_party(&self.gateway, &r.provider, &r.payer)?
            .ok_or_else(|| convert::invalid(reason::MISSING_FIELD, "provider is required"))?;
        self.top_up(
            &r.request_id,
            &r.terminal_id,
            "",
            &r.card_no,
            external,
            &r.amount,
            wait,
        )
        .await
    }

    async fn third_party_notify(
        &self,
        request: Request<ThirdPartyNotice>,
    ) -> Result<Response<NoticeAck>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            third_party_notify
        );
        let r = request.into_inner();
        let bank_ref = bank_ref("bank_ref", &r.bank_ref)?;
        let bank = self.gateway.bank().ok_or_else(bank_link_missing)?;
        self.gateway.read_barrier().await?;
        metrics::counter!("channel_notices_total").increment(1);
        Ok(Response::new(NoticeAck {
            known: bank.notify(&bank_ref),
        }))
    }

    async fn pay_bill(
        &self,
        request: Request<PayBillRequest>,
    ) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, pay_bill);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let bill = convert::bill_id(&r.bill_id)?;
        let external = match bank_card(&r.bank_card_token, &r.bank_card_masked)? {
            Some(card) => Some(card),
            None => third_party(g, &r.third_party_provider, &r.third_party_payer)?,
        };
        let body = match external {
            None => CommandBody::PayBill {
                bill,
                card: card.clone(),
            },
            Some(external) => CommandBody::StartBankOp {
                card: card.clone(),
                external,
                purpose: yinyi_ledger::BankPurpose::PayBill { bill },
                amount: None,
            },
        };
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        let key = g.key_for_card(&card, &command.terminal);
        self.settle(key, command, wait).await
    }

    async fn authorize_payment(
        &self,
        request: Request<AuthorizePaymentRequest>,
    ) -> Result<Response<BankOpReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            authorize_payment
        );
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let amount = convert::amount("amount", &r.amount, g.limit())?;
        let external = match (
            bank_card(&r.bank_card_token, &r.bank_card_masked)?,
            third_party(g, &r.third_party_provider, &r.third_party_payer)?,
        ) {
            (Some(external), None) | (None, Some(external)) => external,
            _ => {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    "name the payer: a bank card (bank_card_token, bank_card_masked) or the channel (third_party_provider, third_party_payer), one of the two",
                ));
            }
        };
        let body = CommandBody::AuthorizePayment {
            card: card.clone(),
            external,
            amount,
        };
        let command = g.command(&r.request_id, &r.terminal_id, "", body)?;
        self.bank_op_reply(&card, command, wait).await
    }

    async fn capture_payment(
        &self,
        request: Request<CapturePaymentRequest>,
    ) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, capture_payment);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let body = CommandBody::CapturePayment {
            card: card.clone(),
            authorization: bank_ref("authorization_ref", &r.authorization_ref)?,
            bill: convert::bill_id(&r.bill_id)?,
        };
        let command = g.command(&r.request_id, &r.terminal_id, "", body)?;
        let key = g.key_for_card(&card, &command.terminal);
        self.settle(key, command, wait).await
    }

    async fn release_authorization(
        &self,
        request: Request<ReleaseAuthorizationRequest>,
    ) -> Result<Response<BankOpReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            release_authorization
        );
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let card = convert::card_no("card_no", &r.card_no)?;
        let body = CommandBody::ReleaseAuthorization {
            card: card.clone(),
            authorization: bank_ref("authorization_ref", &r.authorization_ref)?,
        };
        let command = self
            .gateway
            .command(&r.request_id, &r.terminal_id, "", body)?;
        self.bank_op_reply(&card, command, wait).await
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, refund);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let bill = convert::bill_id(&r.bill_id)?;
        let amount = convert::optional_amount("amount", &r.amount, g.limit())?;
        let destination = RefundDestination::try_from(r.destination).map_err(|_| {
            convert::invalid(
                reason::INVALID_ENUM,
                format!("destination: unknown value {}", r.destination),
            )
        })?;
        let declined = match r.after_declined_bank_ref.as_str() {
            "" => None,
            text => Some(yinyi_ledger::BankRef::parse(text).map_err(|e| {
                convert::invalid(reason::INVALID_ID, format!("after_declined_bank_ref: {e}"))
            })?),
        };
        // The way the bill was paid is read after a read barrier, so a payment just made is
        // seen. (The ledger refuses the wrong way in any case: REFUND_CHANNEL_NOT_ALLOWED.)
        g.read_barrier().await?;
        let body = self.refund_body(&bill, &r.card_no, amount, destination, declined)?;
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        let key = g.key_for_bill(&bill, &command.terminal);
        self.settle(key, command, wait).await
    }

    async fn batch_refund(
        &self,
        request: Request<BatchRefundRequest>,
    ) -> Result<Response<BatchRefundReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, batch_refund);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let batch = &r.batch_id;
        if batch.is_empty()
            || batch.len() > 40
            || !batch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(convert::invalid(
                reason::INVALID_ID,
                format!(
                    "batch_id {:?}: 1 to 40 letters, digits, '-' or '_'",
                    batch.chars().take(64).collect::<String>()
                ),
            ));
        }
        if r.items.is_empty() || r.items.len() > MAX_REFUND_BATCH {
            return Err(convert::invalid(
                reason::INVALID_REQUEST,
                format!(
                    "a batch refunds 1 to {MAX_REFUND_BATCH} bills, not {}",
                    r.items.len()
                ),
            ));
        }
        // Every bill is checked before any is refunded: a malformed batch refunds nobody.
        // The terminal and operator are the batch's: a bad one is one clear error, not a
        // refused line per bill.
        super::auth::check_terminal(&convert::terminal_id("terminal_id", &r.terminal_id)?)?;
        convert::operator(&r.operator_id)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut bills = Vec::with_capacity(r.items.len());
        for (i, item) in r.items.iter().enumerate() {
            let bill = convert::bill_id(&item.bill_id).map_err(|e| {
                convert::invalid(reason::INVALID_ID, format!("item {i}: {}", e.message()))
            })?;
            if !item.card_no.is_empty() {
                convert::card_no("card_no", &item.card_no).map_err(|e| {
                    convert::invalid(reason::INVALID_ID, format!("item {i}: {}", e.message()))
                })?;
            }
            if !seen.insert(bill.clone()) {
                return Err(convert::invalid(
                    reason::INVALID_REQUEST,
                    format!("item {i}: bill {bill} is in the batch twice"),
                ));
            }
            bills.push((format!("{batch}.{i:04}"), bill, item.card_no.clone()));
        }
        g.read_barrier().await?;
        let results =
            futures::stream::iter(bills.into_iter().map(|(request_id, bill, card_no)| {
                let (terminal_id, operator_id) = (&r.terminal_id, &r.operator_id);
                async move {
                    let refunded = async {
                        let body = self.refund_body(
                            &bill,
                            &card_no,
                            None,
                            RefundDestination::Unspecified,
                            None,
                        )?;
                        let command = g.command(&request_id, terminal_id, operator_id, body)?;
                        let key = g.key_for_bill(&bill, &command.terminal);
                        self.settle(key, command, wait).await
                    }
                    .await;
                    batch_result(bill.to_string(), request_id, refunded)
                }
            }))
            .buffered(REFUND_BATCH_CONCURRENCY)
            .collect::<Vec<BatchRefundResult>>()
            .await;
        let count = |outcome: &str| results.iter().filter(|r| r.outcome == outcome).count() as u64;
        Ok(Response::new(BatchRefundReply {
            refunded: count("REFUNDED"),
            pending: count("PENDING"),
            refused: count("REFUSED"),
            results,
        }))
    }

    async fn withdraw(
        &self,
        request: Request<WithdrawRequest>,
    ) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, withdraw);
        let wait = saga_wait(request.metadata());
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let amount = convert::optional_amount("amount", &r.amount, g.limit())?;
        let body = match bank_card(&r.bank_card_token, &r.bank_card_masked)? {
            None => CommandBody::WithdrawCash {
                card: card.clone(),
                amount,
            },
            Some(external) => CommandBody::StartBankOp {
                card: card.clone(),
                external,
                purpose: yinyi_ledger::BankPurpose::Withdraw,
                amount,
            },
        };
        let command = g.command(&r.request_id, &r.terminal_id, &r.operator_id, body)?;
        let key = g.key_for_card(&card, &command.terminal);
        self.settle(key, command, wait).await
    }

    async fn report_loss(
        &self,
        request: Request<CardRequest>,
    ) -> Result<Response<CardReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, report_loss);
        self.loss(request.into_inner(), |card, person| {
            CommandBody::ReportLoss { card, person }
        })
        .await
    }

    async fn cancel_loss(
        &self,
        request: Request<CardRequest>,
    ) -> Result<Response<CardReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, cancel_loss);
        self.loss(request.into_inner(), |card, person| {
            CommandBody::CancelLoss { card, person }
        })
        .await
    }

    async fn replace_card(
        &self,
        request: Request<ReplaceCardRequest>,
    ) -> Result<Response<ReplaceCardReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, replace_card);
        let r = request.into_inner();
        let g = &self.gateway;
        let old_card = convert::card_no("old_card_no", &r.old_card_no)?;
        let new_card = convert::card_no("new_card_no", &r.new_card_no)?;
        let person = convert::person_key(&r.person_key)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::ReplaceCard {
                old_card: old_card.clone(),
                new_card,
                person,
            },
        )?;
        let key = g.key_for_card(&old_card, &command.terminal);
        match g.submit(key, command).await? {
            Effect::CardReplaced {
                old_card,
                new_card,
                account,
            } => Ok(Response::new(ReplaceCardReply {
                account_id: account.to_string(),
                old_card_no: old_card.to_string(),
                new_card_no: new_card.to_string(),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn query_balance(
        &self,
        request: Request<QueryBalanceRequest>,
    ) -> Result<Response<BalanceReply>, Status> {
        lead_or_forward!(self.gateway, request, PaymentServiceClient, query_balance);
        let r = request.into_inner();
        self.gateway.read_barrier().await?;
        let account = self
            .account_of(&r.card_no, &r.account_id, "QueryBalance")
            .await?;
        let account = self.account_record(account)?;
        let available = account
            .balance
            .checked_add(account.overdraft_limit)
            .ok_or_else(|| convert::internal("balance plus overdraft overflows"))?;
        Ok(Response::new(BalanceReply {
            account_id: account.id.to_string(),
            balance: convert::money(account.balance),
            overdraft_limit: convert::money(account.overdraft_limit),
            available: convert::money(available),
            status: convert::account_status(account.status),
            holder_name: self.gateway.show(&account.holder.name),
            id_masked: account.holder.id_masked,
        }))
    }

    async fn list_transactions(
        &self,
        request: Request<ListTransactionsRequest>,
    ) -> Result<Response<ListTransactionsReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            PaymentServiceClient,
            list_transactions
        );
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        let before = if r.before_txn_id.is_empty() {
            None
        } else {
            Some(convert::txn_id("before_txn_id", &r.before_txn_id)?)
        };
        self.gateway.read_barrier().await?;
        let account = self
            .account_of(&r.card_no, &r.account_id, "ListTransactions")
            .await?;
        self.account_record(account)?;
        let prefix = account.0.to_be_bytes();
        let before_key = before.map(|txn| journal_key(account, txn));
        let entries: Vec<yinyi_ledger::JournalEntry> = self
            .gateway
            .backend()
            .store()
            .scan_prefix_rev(
                CF_JOURNAL,
                &prefix,
                before_key.as_ref().map(|k| k.as_slice()),
                limit as usize,
            )
            .map_err(|e| convert::internal(format!("journal read: {e}")))?;
        Ok(Response::new(ListTransactionsReply {
            account_id: account.to_string(),
            transactions: entries.iter().map(convert::transaction).collect(),
        }))
    }
}

/// How long a call waits for its saga: what is left of its deadline less a margin for the
/// answer, at most 10 s; the saga goes on after it.
pub(super) fn saga_wait(metadata: &tonic::metadata::MetadataMap) -> std::time::Duration {
    use std::time::Duration;
    let deadline = super::grpc_timeout(metadata).unwrap_or(Duration::from_secs(5));
    deadline
        .saturating_sub(Duration::from_millis(300))
        .min(Duration::from_secs(10))
}

/// A bank reference a request names in `field`.
fn bank_ref(field: &str, text: &str) -> Result<yinyi_ledger::BankRef, Status> {
    yinyi_ledger::BankRef::parse(convert::required(field, text)?)
        .map_err(|e| convert::invalid(reason::INVALID_ID, format!("{field}: {e}")))
}

/// The third-party payer a request names, when it names one (provider and payer together);
/// the provider must be one of the channels this node is configured with.
pub(super) fn third_party(
    gateway: &Gateway,
    provider: &str,
    payer: &str,
) -> Result<Option<yinyi_ledger::External>, Status> {
    if provider.is_empty() && payer.is_empty() {
        return Ok(None);
    }
    let provider = convert::required("third_party_provider", provider)?;
    if !gateway.providers().iter().any(|p| p == provider) {
        return Err(convert::invalid(
            reason::INVALID_ID,
            format!(
                "provider {:?} is not a channel of this hospital: one of {}",
                provider.chars().take(40).collect::<String>(),
                gateway.providers().join(", ")
            ),
        ));
    }
    // The channel's payer id travels like a card token: 8 to 64 letters, digits, - or _.
    let payer = yinyi_ledger::CardToken::parse(convert::required("third_party_payer", payer)?)
        .map_err(|e| convert::invalid(reason::INVALID_ID, format!("payer: {e}")))?;
    Ok(Some(yinyi_ledger::External::ThirdParty {
        provider: provider.to_string(),
        payer: payer.to_string(),
    }))
}

/// The bank card a request names, when it names one (token and masked form together).
pub(super) fn bank_card(
    token: &str,
    masked: &str,
) -> Result<Option<yinyi_ledger::External>, Status> {
    if token.is_empty() && masked.is_empty() {
        return Ok(None);
    }
    let token = yinyi_ledger::CardToken::parse(convert::required("bank_card_token", token)?)
        .map_err(|e| convert::invalid(reason::INVALID_ID, format!("bank_card_token: {e}")))?;
    Ok(Some(yinyi_ledger::External::BankCard {
        token,
        masked: masked_card(masked)?,
    }))
}

/// A bank card's masked form for receipts: never the full number.
fn masked_card(text: &str) -> Result<String, Status> {
    let text = convert::required("bank_card_masked", text)?;
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let shape_ok = text.len() <= 32 && text.bytes().all(|b| b.is_ascii_digit() || b == b'*');
    if !shape_ok || digits > 10 {
        return Err(convert::invalid(
            reason::INVALID_ID,
            "bank_card_masked must be a masked number such as 6222****1234 (at most 10 digits shown)",
        ));
    }
    Ok(text.to_string())
}

pub(super) fn bank_link_missing() -> Status {
    status_with_reason(
        Code::Unimplemented,
        reason::BANK_LINK_NOT_CONFIGURED,
        "this operation needs a bank link the leader does not have (start it with --bank-addr); nothing was done",
    )
}
