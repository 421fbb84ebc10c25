//! The sagas' bank link on this node: the front-end processor client from `yinyi-bank`.
//! Only the bank's own answer settles an operation: a request that never left this node is
//! `NotSent`, and a status reply about another amount than ours cannot settle anything.

use std::time::{SystemTime, UNIX_EPOCH};

use yinyi_actors::{BankAnswer, BankLink, BankStatus};
use yinyi_bank::{BankClient, Message, OpState, Processing, ResponseCode, StatementLine};
use yinyi_ledger::{BankOp, BankOpKind, BankPurpose, BankRef, External, Money, SettlementTerms};

pub struct NodeBankLink {
    client: BankClient,
    terms: SettlementTerms,
}

impl NodeBankLink {
    pub fn new(client: BankClient, terms: SettlementTerms) -> NodeBankLink {
        NodeBankLink { client, terms }
    }

    /// The link's settlement terms (fee, reserve), as configured.
    pub fn terms(&self) -> SettlementTerms {
        self.terms
    }

    /// The link's settlement advice of a business day (`YYYYMMDD`): what it paid (negative:
    /// what the hospital owes it) and its reference, or `None` while it has not settled.
    pub async fn settlement_advice(&self, date: &str) -> Result<Option<(Money, String)>, String> {
        let request = Message::SettlementRequest {
            date: date.to_string(),
        };
        match self.client.call(&request).await {
            Ok(Message::SettlementAdvice {
                paid,
                amount,
                reference,
                ..
            }) => Ok(paid.then_some((amount, reference))),
            Ok(other) => Err(format!("the bank answered {}", other.mti())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The bank's statement of a business day (`YYYYMMDD`).
    pub async fn statement(&self, date: &str) -> Result<Vec<StatementLine>, String> {
        let request = Message::StatementRequest {
            date: date.to_string(),
        };
        match self.client.call(&request).await {
            Ok(Message::Statement { lines, .. }) => Ok(lines),
            Ok(other) => Err(format!("the bank answered {}", other.mti())),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn processing(op: &BankOp) -> Processing {
    match op.kind {
        BankOpKind::Debit => Processing::Debit,
        BankOpKind::Credit => Processing::Credit,
        BankOpKind::Hold => Processing::PreAuth,
    }
}

impl NodeBankLink {
    /// A capture: the completion advice of its hold, sent until the bank answers it.
    async fn complete_hold(&self, op: &BankOp, authorization: &BankRef) -> BankAnswer {
        let advice = Message::CompletionAdvice {
            bank_ref: op.bank_ref.clone(),
            original: authorization.clone(),
            amount: op.amount,
            repeat: false,
        };
        match self.client.call(&advice).await {
            Ok(Message::CompletionAck {
                code: ResponseCode::Approved,
                ..
            }) => BankAnswer::Approved("00 captured".into()),
            // Only a definite refusal ends the capture: the hold was not found, is no longer
            // held or is too small, or the payer's side refused. Anything else (a switch
            // error, a code we do not know) is no answer, and the advice is sent again.
            Ok(Message::CompletionAck {
                code:
                    code @ (ResponseCode::NotFound
                    | ResponseCode::InvalidTransaction
                    | ResponseCode::Declined
                    | ResponseCode::InsufficientFunds
                    | ResponseCode::InvalidCard),
                ..
            }) => BankAnswer::Declined(format!("{} capture refused", code.as_str())),
            Ok(Message::CompletionAck { code, .. }) => {
                BankAnswer::Unanswered(format!("{} capture not settled", code.as_str()))
            }
            Ok(other) => BankAnswer::Unanswered(format!("unexpected {}", other.mti())),
            Err(e) => BankAnswer::Unanswered(e.to_string()),
        }
    }
}

impl BankLink for NodeBankLink {
    async fn execute(&self, op: &BankOp) -> BankAnswer {
        if let BankPurpose::Capture { authorization, .. } = &op.purpose {
            return self.complete_hold(op, authorization).await;
        }
        let (processing, token) = match &op.external {
            External::BankCard { token, .. } => (processing(op), token.clone()),
            External::ThirdParty { payer, .. } => match yinyi_ledger::CardToken::parse(payer) {
                // A hold is answered at once (the payer agreed to it in the app before the
                // channel was asked).
                Ok(token) if op.kind == BankOpKind::Hold => (Processing::PreAuth, token),
                // A payment is an order the payer confirms; a refund is credited at once.
                Ok(token) if op.kind == BankOpKind::Debit => (Processing::ChannelDebit, token),
                Ok(token) => (Processing::Credit, token),
                // Final without the bank saying so, and rightly: the payer id is replicated
                // with the operation and parsed the same way on every node, so no leader can
                // ever have sent this request and no money can have moved for it.
                Err(e) => return BankAnswer::Declined(format!("payer id: {e}")),
            },
        };
        let request = Message::FinancialRequest {
            processing,
            bank_ref: op.bank_ref.clone(),
            token,
            amount: op.amount,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        match self.client.call(&request).await {
            Ok(Message::FinancialResponse {
                code: ResponseCode::Approved,
                ..
            }) => BankAnswer::Approved("00".into()),
            // The switch did not process it: unknown, to be settled by status or reversal.
            Ok(Message::FinancialResponse {
                code: ResponseCode::IssuerUnavailable,
                ..
            }) => BankAnswer::Unknown("91 issuer unavailable".into()),
            Ok(Message::FinancialResponse {
                code: ResponseCode::InProgress,
                ..
            }) => BankAnswer::InProgress("09 order awaiting the payer".into()),
            Ok(Message::FinancialResponse { code, .. }) => {
                BankAnswer::Declined(code.as_str().to_string())
            }
            Ok(other) => BankAnswer::Unknown(format!("unexpected {}", other.mti())),
            // Nothing left this node this time; an earlier leader may still have sent it.
            Err(e) if e.nothing_sent() => BankAnswer::NotSent(e.to_string()),
            // Includes a response that does not fit the request (another amount or processing
            // code): a protocol error, so the outcome is unknown.
            Err(e) => BankAnswer::Unknown(e.to_string()),
        }
    }

    async fn reverse(&self, op: &BankOp, repeat: bool) -> bool {
        let advice = Message::ReversalAdvice {
            bank_ref: op.bank_ref.clone(),
            amount: op.amount,
            repeat,
        };
        matches!(
            self.client.call(&advice).await,
            Ok(Message::ReversalAck {
                code: ResponseCode::Approved,
                ..
            })
        )
    }

    async fn status(&self, op: &BankOp) -> Option<BankStatus> {
        let query = Message::StatusQuery {
            bank_ref: op.bank_ref.clone(),
        };
        match self.client.call(&query).await {
            // Applied, but not what we asked: the bank moved another amount than this
            // operation's, so it can neither complete it nor be told apart from a fault.
            Ok(Message::StatusReply {
                state: OpState::Applied,
                amount,
                ..
            }) if amount != op.amount => {
                metrics::counter!("bank_replies_mismatched_total", "mti" => "0610").increment(1);
                tracing::error!(bank_ref = %op.bank_ref, asked = %op.amount, applied = %amount,
                    "the bank's status reports another amount: cannot tell");
                None
            }
            Ok(Message::StatusReply { state, .. }) => Some(match state {
                OpState::Applied => BankStatus::Applied,
                OpState::Declined => BankStatus::Declined,
                OpState::Reversed => BankStatus::Reversed,
                OpState::Unknown => BankStatus::Unknown,
                OpState::Pending => BankStatus::Pending,
                // A hold taken by its completion was applied first.
                OpState::Captured => BankStatus::Applied,
            }),
            _ => None,
        }
    }
}
