//! The messages between yinyi and the bank's front-end processor (前置机), modelled on ISO 8583:
//! a message type indicator (MTI) and fixed or length-prefixed fields.
//!
//! | MTI | message |
//! |---|---|
//! | 0200 / 0210 | financial request (debit or credit a card, or hold an amount on it) and its response |
//! | 0220 / 0221 | completion advice (预授权完成: take part of a hold, free the rest), first and repeat |
//! | 0230 | completion advice acknowledgement |
//! | 0420 / 0421 | reversal advice (冲正), first and repeat |
//! | 0430 | reversal advice acknowledgement |
//! | 0600 / 0610 | status query of an operation by reference, and its answer |
//! | 0800 / 0810 | statement request for a business day, and the statement |
//! | 0820 / 0830 | settlement request for a business day (清分结算), and the link's settlement advice |
//! | 9800 / 9810 | simulator only: set faults at run time, and the faults now in force |

use yinyi_ledger::{BankRef, CardToken, Money};

/// Which way money moves at the bank, as ISO 8583's processing code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Processing {
    /// `000000`: the bank debits the card (a top-up or a bill paid by card).
    Debit,
    /// `200000`: the bank credits the card (a refund or a withdrawal to the card).
    Credit,
    /// `300000`: a payment order on the third-party channel (WeChat/Alipay style): the payer
    /// confirms it in their app later; the channel notifies the result asynchronously.
    ChannelDebit,
    /// `030000`: a pre-authorization (预授权): the bank holds the amount on the card or
    /// channel account; nothing moves until a completion advice takes part of it.
    PreAuth,
}

/// A response code (field 39).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// `00`
    Approved,
    /// `05` do not honour
    Declined,
    /// `51` insufficient funds
    InsufficientFunds,
    /// `14` invalid card
    InvalidCard,
    /// `12` invalid transaction, e.g. an original arriving after its reversal
    InvalidTransaction,
    /// `25` unable to locate the original
    NotFound,
    /// `91` issuer or switch inoperative
    IssuerUnavailable,
    /// `09` request in progress: a channel order awaiting the payer.
    InProgress,
}

impl ResponseCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseCode::Approved => "00",
            ResponseCode::Declined => "05",
            ResponseCode::InsufficientFunds => "51",
            ResponseCode::InvalidCard => "14",
            ResponseCode::InvalidTransaction => "12",
            ResponseCode::NotFound => "25",
            ResponseCode::IssuerUnavailable => "91",
            ResponseCode::InProgress => "09",
        }
    }

    pub fn parse(text: &str) -> Option<ResponseCode> {
        Some(match text {
            "00" => ResponseCode::Approved,
            "05" => ResponseCode::Declined,
            "51" => ResponseCode::InsufficientFunds,
            "14" => ResponseCode::InvalidCard,
            "12" => ResponseCode::InvalidTransaction,
            "25" => ResponseCode::NotFound,
            "91" => ResponseCode::IssuerUnavailable,
            "09" => ResponseCode::InProgress,
            _ => return None,
        })
    }
}

/// What the bank holds about one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpState {
    /// `N`: never seen.
    Unknown,
    /// `A`: applied (money moved).
    Applied,
    /// `D`: declined (no money moved).
    Declined,
    /// `R`: reversed (money moved and moved back, or a reversal arrived first).
    Reversed,
    /// `P`: a channel order awaiting the payer's confirmation.
    Pending,
    /// `C`: a hold completed (captured); the completion is its own operation.
    Captured,
}

impl OpState {
    pub fn as_char(self) -> u8 {
        match self {
            OpState::Unknown => b'N',
            OpState::Applied => b'A',
            OpState::Declined => b'D',
            OpState::Reversed => b'R',
            OpState::Pending => b'P',
            OpState::Captured => b'C',
        }
    }

    pub fn parse(b: u8) -> Option<OpState> {
        Some(match b {
            b'N' => OpState::Unknown,
            b'A' => OpState::Applied,
            b'D' => OpState::Declined,
            b'R' => OpState::Reversed,
            b'P' => OpState::Pending,
            b'C' => OpState::Captured,
            _ => return None,
        })
    }
}

/// One line of the bank's daily statement: an operation as the bank settled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    pub bank_ref: BankRef,
    pub processing: Processing,
    pub token: CardToken,
    pub amount: Money,
    pub state: OpState,
    /// Milliseconds since the epoch when the bank applied it.
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0200
    FinancialRequest {
        processing: Processing,
        bank_ref: BankRef,
        token: CardToken,
        amount: Money,
        at_ms: i64,
    },
    /// 0210
    FinancialResponse {
        processing: Processing,
        bank_ref: BankRef,
        amount: Money,
        code: ResponseCode,
    },
    /// 0220, or 0221 when `repeat`: take `amount` of the hold `original` under the new
    /// reference `bank_ref`; the bank frees the rest of the hold. An advice is sent again until
    /// the bank answers, and the bank answers a repeat as it answered the first.
    CompletionAdvice {
        bank_ref: BankRef,
        original: BankRef,
        amount: Money,
        repeat: bool,
    },
    /// 0230: `Approved` when taken; `NotFound` (no such hold), `InvalidTransaction` (the hold
    /// is no longer held, or holds less than `amount`) when refused, nothing taken.
    CompletionAck {
        bank_ref: BankRef,
        code: ResponseCode,
    },
    /// 0420, or 0421 when `repeat`
    ReversalAdvice {
        bank_ref: BankRef,
        amount: Money,
        repeat: bool,
    },
    /// 0430: `Approved` when reversed (or nothing to reverse, recorded so that a late original
    /// is refused); any other code means "not done, send it again".
    ReversalAck {
        bank_ref: BankRef,
        code: ResponseCode,
    },
    /// 0600
    StatusQuery { bank_ref: BankRef },
    /// 0610
    StatusReply {
        bank_ref: BankRef,
        state: OpState,
        amount: Money,
    },
    /// 0800: the statement of one business day, `YYYYMMDD` (Asia/Shanghai).
    StatementRequest { date: String },
    /// 0810
    Statement {
        date: String,
        lines: Vec<StatementLine>,
    },
    /// 0820: what the link settled for a business day, `YYYYMMDD`.
    SettlementRequest { date: String },
    /// 0830: the link's settlement advice: `paid` (and how much, negative when the hospital
    /// owes the link, under the link's `reference`) or not settled yet.
    SettlementAdvice {
        date: String,
        paid: bool,
        amount: Money,
        reference: String,
    },
    /// 9800: simulator faults as `key=value,…` (see `sim::Faults`).
    SetFaults { spec: String },
    /// 9810: the faults now in force, or why the spec was refused.
    FaultsAck { ok: bool, text: String },
}

/// The statement's lines as settlement counts them: what the link collected for the hospital
/// and what it paid out for it.
pub fn settlement_lines(lines: &[StatementLine]) -> Vec<yinyi_ledger::SettlementLine> {
    use yinyi_ledger::Direction;
    lines
        .iter()
        .filter(|l| l.state == OpState::Applied)
        .filter_map(|l| {
            let direction = match l.processing {
                Processing::Debit | Processing::ChannelDebit => Direction::Collected,
                Processing::Credit => Direction::PaidOut,
                // A hold moves no money; its completion is a debit line of its own.
                Processing::PreAuth => return None,
            };
            Some(yinyi_ledger::SettlementLine {
                bank_ref: l.bank_ref.clone(),
                direction,
                amount: l.amount,
            })
        })
        .collect()
}

impl Message {
    pub fn mti(&self) -> &'static str {
        match self {
            Message::FinancialRequest { .. } => "0200",
            Message::FinancialResponse { .. } => "0210",
            Message::CompletionAdvice { repeat: false, .. } => "0220",
            Message::CompletionAdvice { repeat: true, .. } => "0221",
            Message::CompletionAck { .. } => "0230",
            Message::ReversalAdvice { repeat: false, .. } => "0420",
            Message::ReversalAdvice { repeat: true, .. } => "0421",
            Message::ReversalAck { .. } => "0430",
            Message::StatusQuery { .. } => "0600",
            Message::StatusReply { .. } => "0610",
            Message::StatementRequest { .. } => "0800",
            Message::Statement { .. } => "0810",
            Message::SettlementRequest { .. } => "0820",
            Message::SettlementAdvice { .. } => "0830",
            Message::SetFaults { .. } => "9800",
            Message::FaultsAck { .. } => "9810",
        }
    }
}
