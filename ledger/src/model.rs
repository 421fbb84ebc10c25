//! The entities the ledger keeps: accounts, cards, bills, terminals, bank operations, journal
//! entries and reports. Plain data; the rules that change them live in `apply`.

use serde::{Deserialize, Serialize};

use crate::ids::{
    AccountId, AdmissionId, BankRef, BillId, CardNo, CardToken, InsuranceSettlementId, OperatorId,
    PersonKey, RequestId, TerminalId, TerminalKind, TxnId, WardId,
};
use crate::money::Money;

/// Milliseconds since the Unix epoch, stamped by the leader when it proposes a command.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

/// The account holder (实名): name, the keyed hash of the ID number and a masked form of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub name: String,
    pub person: PersonKey,
    /// e.g. `110***********1234`; never the full number.
    pub id_masked: String,
    pub phone: String,
}

/// Longest holder name, in characters.
pub const MAX_HOLDER_NAME_CHARS: usize = 40;

/// A name or phone sealed by the API with the site's data key starts so; the ledger stores it
/// as it comes (the API checked the plain value's shape before sealing it).
pub const SEALED_PREFIX: &str = "sealed:v1:";

/// Longest sealed value: a 40-character name of 4-byte characters, nonce and tag, in hex.
const MAX_SEALED_CHARS: usize = SEALED_PREFIX.len() + 2 * (24 + 4 * MAX_HOLDER_NAME_CHARS + 16);

/// A sealed value's shape: the prefix, then hex of at least a nonce and a tag.
fn is_sealed(value: &str) -> bool {
    value.strip_prefix(SEALED_PREFIX).is_some_and(|body| {
        value.len() <= MAX_SEALED_CHARS
            && body.len() >= 2 * (24 + 16)
            && body.len() % 2 == 0
            && body.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

impl Holder {
    /// The shapes personal data must have before it is stored (and served to every channel):
    /// a name of 1 to 40 characters without control characters; a masked ID number of 8 to 20
    /// letters or digits with one run of at least 4 `*` and at most 10 characters shown
    /// (`110101********4512`), never a full number; a phone empty or masked the same way, with
    /// at most 7 digits shown (`138****0000`).
    pub fn check(&self) -> Result<(), String> {
        let name_chars = self.name.chars().count();
        if is_sealed(&self.name) {
            // Sealed by the API after it checked the plain name.
        } else if self.name.starts_with(SEALED_PREFIX) {
            return Err("holder name: a sealed value of the wrong shape".into());
        } else if name_chars == 0
            || name_chars > MAX_HOLDER_NAME_CHARS
            || self.name.chars().any(char::is_control)
        {
            return Err(format!(
                "holder name: 1 to {MAX_HOLDER_NAME_CHARS} characters, no control characters"
            ));
        }
        check_masked("id_masked", &self.id_masked, 8, 20, 10, |c| {
            c.is_ascii_alphanumeric()
        })?;
        if !self.phone.is_empty() && !is_sealed(&self.phone) {
            check_masked("phone", &self.phone, 7, 15, 7, |c| c.is_ascii_digit())?;
        }
        Ok(())
    }
}

/// A masked value: `min..=max` characters, the shown ones `shown_char`, at most `max_shown`
/// of them, and one run of at least 4 `*` hiding the rest.
fn check_masked(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    max_shown: usize,
    shown_char: fn(char) -> bool,
) -> Result<(), String> {
    let chars: Vec<char> = value.chars().collect();
    let stars = chars.iter().filter(|&&c| c == '*').count();
    let runs = chars
        .windows(2)
        .filter(|w| w[0] != '*' && w[1] == '*')
        .count()
        + usize::from(chars.first() == Some(&'*'));
    let shape = chars.len() >= min
        && chars.len() <= max
        && chars.iter().all(|&c| c == '*' || shown_char(c))
        && stars >= 4
        && runs == 1
        && chars.len() - stars <= max_shown;
    if !shape {
        return Err(format!(
            "{field} must be masked: {min} to {max} characters, one run of at least 4 '*', at \
             most {max_shown} shown (never a full number)"
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountStatus {
    Active,
    Frozen,
}

/// 预交金账户: the patient's prepaid account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub holder: Holder,
    pub balance: Money,
    /// 绿色通道: how far below zero charges may take the balance (0 by default).
    pub overdraft_limit: Money,
    pub status: AccountStatus,
    /// Bumped by every change; lets caches and reports see staleness.
    pub version: u64,
    pub opened_at: Timestamp,
    pub last_activity_at: Timestamp,
}

impl Account {
    /// What the account can pay: balance plus overdraft.
    pub fn available(&self) -> Money {
        self.balance
            .checked_add(self.overdraft_limit)
            .expect("balance + overdraft within range")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardKind {
    /// 就诊卡 issued by the hospital
    Hospital,
    /// 电子健康卡
    Health,
    /// 社保卡
    SocialSecurity,
    /// the ID card itself used as a card
    IdCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardStatus {
    Active,
    /// 挂失: refused everywhere until the loss is cancelled or the card replaced.
    Lost,
    /// 补卡: superseded by a new card bound to the same account.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub no: CardNo,
    pub kind: CardKind,
    pub account: AccountId,
    pub status: CardStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillKind {
    /// 挂号费
    Registration,
    /// 门诊缴费: drugs, labs, exams
    Outpatient,
    /// 住院预交金
    InpatientDeposit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillStatus {
    Unpaid,
    Paid,
    /// Cancelled by HIS. Refundable when it had been paid.
    Cancelled,
    Refunded,
}

/// How money moved: the channel of a journal entry, a payment or a report line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Channel {
    Cash,
    /// From or to the prepaid account.
    Account,
    BankCard,
    ThirdParty,
}

/// How a bill was paid; an online refund goes back the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub channel: Channel,
    pub txn: TxnId,
    /// The bank operation that paid it, for bank-card and third-party payments.
    pub bank_ref: Option<BankRef>,
    pub terminal: TerminalId,
    pub at: Timestamp,
}

/// A bill posted by HIS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bill {
    pub id: BillId,
    pub account: AccountId,
    pub kind: BillKind,
    pub amount: Money,
    pub status: BillStatus,
    pub payment: Option<Payment>,
    /// A bank operation in flight for this bill (a payment or an online refund); blocks others.
    pub pending_op: Option<BankRef>,
    pub posted_at: Timestamp,
    /// How much of a paid bill HIS has cancelled (a drug returned, an exam called off): what
    /// may be refunded. The whole amount once HIS cancels the bill.
    pub cancelled: Money,
    /// How much has been refunded so far, whichever way; never above `cancelled`.
    pub refunded: Money,
    /// HIS printed the invoice (发票已打印): refunds happen only at a window, where the invoice
    /// is taken back.
    pub invoiced: bool,
    /// The bill's latest online refund, when the bank declined it (or it was reversed), and how
    /// much of it may still go into the account or out in cash instead. A new online refund
    /// clears it: the card takes money again.
    pub declined_refund: Option<BankRef>,
    pub declined_left: Money,
}

impl Bill {
    /// What may still be refunded: cancelled by HIS and not refunded yet.
    pub fn refundable(&self) -> Money {
        self.cancelled
            .checked_sub(self.refunded)
            .expect("bill amounts within range")
    }

    /// Decodes a bill stored before partial refunds and invoices (the first eight fields),
    /// reading its refund state off its status: those bills were refunded whole or not at all.
    pub fn from_first_layout(old: BillFirstLayout) -> Bill {
        let (cancelled, refunded) = match old.status {
            BillStatus::Unpaid | BillStatus::Paid => (Money::ZERO, Money::ZERO),
            BillStatus::Cancelled => (old.amount, Money::ZERO),
            BillStatus::Refunded => (old.amount, old.amount),
        };
        Bill {
            id: old.id,
            account: old.account,
            kind: old.kind,
            amount: old.amount,
            status: old.status,
            payment: old.payment,
            pending_op: old.pending_op,
            posted_at: old.posted_at,
            cancelled,
            refunded,
            invoiced: false,
            declined_refund: None,
            declined_left: Money::ZERO,
        }
    }
}

/// What happened to a bill, in log order: what HIS reads from its feed (`HisService.BillFeed`)
/// instead of asking after every bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillEvent {
    /// The transaction that did it; the feed's cursor.
    pub txn: TxnId,
    pub bill: BillId,
    pub account: AccountId,
    pub kind: BillEventKind,
    /// Paid: the bill's amount; refunded or cancelled: this part.
    pub amount: Money,
    /// How it was paid or where the refund went; `None` for a cancellation.
    pub channel: Option<Channel>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BillEventKind {
    Paid,
    Refunded,
    /// HIS cancelled it (whole, or a part).
    Cancelled,
}

/// A bill as stored before partial refunds: read by storage when a record of that layout is
/// found (a database, snapshot or backup of an earlier release), never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillFirstLayout {
    pub id: BillId,
    pub account: AccountId,
    pub kind: BillKind,
    pub amount: Money,
    pub status: BillStatus,
    pub payment: Option<Payment>,
    pub pending_op: Option<BankRef>,
    pub posted_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EpisodeStatus {
    /// Admitted: deposits and daily charges go in.
    Open,
    /// HIS sent the final amount (出院): no more charges; waiting for the settlement.
    Final,
    /// Settled: the shortfall collected or the surplus refunded. Online refunds may still be
    /// under way (`refunding`).
    Discharged,
}

/// One deposit into an inpatient episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpisodeDeposit {
    /// Its place among the episode's deposits, from 1.
    pub seq: u32,
    pub txn: TxnId,
    pub amount: Money,
    pub channel: Channel,
    /// The bank operation of a deposit by card or channel: a surplus goes back the same way.
    pub bank_ref: Option<BankRef>,
    /// The prepaid account it came from, when it came from one (the patient's or a relative's).
    pub from_account: Option<AccountId>,
    /// How much of it went back online at discharge (in flight included).
    pub refunded_online: Money,
    pub terminal: TerminalId,
    pub at: Timestamp,
}

/// 住院: one inpatient episode, opened by HIS at admission and closed by the discharge
/// settlement (出院结算). Its money is the deposits; charges are HIS's running total, and
/// only the final amount is taken at discharge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub id: AdmissionId,
    /// The patient's account.
    pub account: AccountId,
    pub ward: WardId,
    /// Below this much unused deposit the patient is on the reminder list (催缴).
    pub reminder_below: Money,
    pub status: EpisodeStatus,
    pub deposits: Vec<EpisodeDeposit>,
    /// The sum of the deposits.
    pub deposited: Money,
    /// HIS's daily charges (日清单) so far.
    pub charges: Money,
    pub charge_posts: u32,
    /// The final amount HIS sent at discharge.
    pub final_amount: Option<Money>,
    /// Surplus paid back and done with (into the account, in cash, or online once the bank
    /// approved).
    pub refunded: Money,
    /// Surplus on its way back online, waiting for the bank.
    pub refunding: Money,
    /// Deposits by card or channel started and not yet answered: a discharge waits for them.
    pub deposits_in_flight: u32,
    pub opened_at: Timestamp,
    pub discharged_at: Option<Timestamp>,
}

impl Episode {
    /// The most deposits one episode takes (each may need its own refund at discharge).
    pub const MAX_DEPOSITS: usize = 100;

    /// Deposits not yet used by the charges: what the reminder list compares (may be below 0).
    pub fn unused(&self) -> Money {
        self.deposited
            .checked_sub(self.final_amount.unwrap_or(self.charges))
            .expect("episode amounts within range")
    }

    /// The money the hospital holds for this episode: the deposits, less what was paid back and
    /// — once discharged — the final amount. Only online refunds under way remain after
    /// discharge.
    pub fn held(&self) -> Money {
        let taken = match self.status {
            EpisodeStatus::Discharged => self.final_amount.unwrap_or(Money::ZERO),
            EpisodeStatus::Open | EpisodeStatus::Final => Money::ZERO,
        };
        self.deposited
            .checked_sub(self.refunded)
            .and_then(|m| m.checked_sub(taken))
            .expect("episode amounts within range")
    }

    /// On the reminder list (催缴): open and below its ward's threshold.
    pub fn needs_reminder(&self) -> bool {
        self.status == EpisodeStatus::Open && self.unused() < self.reminder_below
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TerminalStatus {
    InService,
    OutOfService,
    Retired,
}

/// An open shift at a window (班次); closing it produces the shift report (日结).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    pub seq: u64,
    pub operator: OperatorId,
    pub opened_at: Timestamp,
    pub totals: Vec<ReportLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    pub id: TerminalId,
    pub kind: TerminalKind,
    pub status: TerminalStatus,
    /// Cash taken since the last collection (or shift close) minus cash paid out.
    pub cash_box: Money,
    pub shift: Option<Shift>,
    /// The number of shifts ever opened here; the next shift's sequence number.
    pub shifts_opened: u64,
    pub collections: u64,
    pub registered_at: Timestamp,
    /// What moved here on the business day of its last movement, by kind and channel; stored
    /// as a [`TerminalDayReport`] when the first movement of a later day comes.
    pub today: Option<TerminalDay>,
}

/// One terminal's movements on one business day, by kind and channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalDay {
    /// `YYYY-MM-DD`, China Standard Time.
    pub date: String,
    pub lines: Vec<ReportLine>,
}

/// A finished day of one terminal (kiosks and mobile channels included, not only windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalDayReport {
    pub terminal: TerminalId,
    pub day: TerminalDay,
}

/// What a bank operation does at the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankOpKind {
    /// The bank takes money from the patient's card (top-up, bill payment).
    Debit,
    /// The bank gives money to the patient's card (online refund, withdrawal).
    Credit,
    /// 预授权: the bank holds the amount on the card or channel account, moving nothing yet;
    /// a capture (a `Debit` of purpose `Capture`) later takes part of it and frees the rest.
    Hold,
}

/// Which external party the money crosses to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum External {
    /// A bank card through the bank's front-end processor (前置机).
    BankCard { token: CardToken, masked: String },
    /// A third-party payment channel (WeChat/Alipay style); `payer` is the channel's payer id.
    ThirdParty { provider: String, payer: String },
}

impl External {
    pub fn channel(&self) -> Channel {
        match self {
            External::BankCard { .. } => Channel::BankCard,
            External::ThirdParty { .. } => Channel::ThirdParty,
        }
    }
}

/// Why money crosses to the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankPurpose {
    /// 银行卡/第三方充值: credit the account once the bank approves.
    TopUp,
    /// Pay a bill straight from the card; the account is untouched.
    PayBill { bill: BillId },
    /// 退费 online: back to the card that paid the bill.
    Refund { bill: BillId },
    /// 退预交金 to a card: the account is debited first and credited back if the bank declines.
    Withdraw,
    /// 住院预交金 by card or channel into an inpatient episode, once the bank approves; the
    /// account is untouched.
    EpisodeDeposit { episode: AdmissionId },
    /// A discharge's surplus back online to the card or channel of deposit `deposit` (its
    /// sequence number in the episode); started by the discharge itself. Declined or
    /// reversed, the money goes into the patient's account instead.
    EpisodeRefund { episode: AdmissionId, deposit: u32 },
    /// 预授权 by the mobile channel before the insurance card is read: the estimate is held
    /// at the bank (`BankOpKind::Hold`); no money moves and the account is untouched.
    /// `capture` is the capture in flight or done; `release` says the payer asked for the
    /// hold back. Held, it is `Authorized` until captured (`Completed`) or released
    /// (`Reversed`).
    Authorization {
        capture: Option<BankRef>,
        release: bool,
    },
    /// 预授权完成: pays `bill` (its self-pay amount) out of the hold of `authorization`; the
    /// bank frees the rest of the hold. Sent as an advice, repeated until the bank answers,
    /// so it is never in doubt.
    Capture {
        authorization: BankRef,
        bill: BillId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BankOpState {
    /// Replicated before the bank is called.
    Pending,
    Completed,
    Declined,
    /// The outcome is unknown (timeout, lost response): to be reversed or confirmed.
    InDoubt,
    /// 冲正: the bank acknowledged the reversal.
    Reversed,
    /// An authorization the bank holds: waiting to be captured or released. Not final, but
    /// not unresolved either: the payer has until the authorization expires.
    Authorized,
}

impl BankOpState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            BankOpState::Completed | BankOpState::Declined | BankOpState::Reversed
        )
    }

    /// Waiting on the bank (Pending, InDoubt): what the saga must resolve in time. A held
    /// authorization waits on the payer instead.
    pub fn is_unresolved(self) -> bool {
        matches!(self, BankOpState::Pending | BankOpState::InDoubt)
    }
}

impl BankPurpose {
    /// A hold (预授权): moves no money itself.
    pub fn is_hold(&self) -> bool {
        matches!(self, BankPurpose::Authorization { .. })
    }
}

impl BankOp {
    /// Waiting on the bank: Pending or InDoubt, or a hold whose release the bank has not yet
    /// acknowledged. What the saga must resolve in time and a person hears of when it does not.
    pub fn is_unresolved(&self) -> bool {
        self.state.is_unresolved()
            || (self.state == BankOpState::Authorized
                && matches!(
                    self.purpose,
                    BankPurpose::Authorization { release: true, .. }
                ))
    }
}

/// A bank operation: one saga's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankOp {
    pub bank_ref: BankRef,
    pub kind: BankOpKind,
    pub purpose: BankPurpose,
    pub external: External,
    pub account: AccountId,
    pub amount: Money,
    pub state: BankOpState,
    /// The request that started it and where.
    pub request: RequestId,
    pub terminal: TerminalId,
    /// Saga steps recorded so far (each step after the start adds one).
    pub steps: u32,
    /// The bank's own reference or decline code of the last step, for reconciliation.
    pub bank_note: String,
    pub started_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// 现金充值 (also the first deposit of IssueCard)
    CashDeposit,
    /// 银行卡/第三方充值, credited when the bank approved
    TopUp,
    /// A bill paid from the account
    BillPayment,
    /// A bill paid by bank card or third party; the account is untouched (amount recorded, not
    /// applied to the balance)
    ExternalBillPayment,
    /// 退费 to the account
    Refund,
    /// 退费 online to the card that paid; the account is untouched
    ExternalRefund,
    /// 退预交金: out of the account, as cash or to a card
    Withdrawal,
    /// A withdrawal to a card that the bank declined or that was reversed: money back
    WithdrawalReturned,
    /// 退费 in cash at a window; the account is untouched (amount recorded, not applied)
    CashRefund,
    /// 调账 into the account, by a person with a reason and a reference
    AdjustmentCredit,
    /// 调账 out of the account, by a person with a reason and a reference
    AdjustmentDebit,
    /// 住院预交金 into an inpatient episode in cash or by card or channel; the balance is
    /// untouched. The entry's `bill` is the admission id.
    EpisodeDeposit,
    /// 住院预交金 into an inpatient episode from a prepaid account (the patient's or a
    /// relative's: the entry's account is the payer's).
    EpisodeDepositFromAccount,
    /// A discharge's surplus paid back online or in cash at a window; the balance is untouched.
    EpisodeRefund,
    /// A discharge's surplus paid into the patient's account (also an online refund of it the
    /// bank declined).
    EpisodeRefundToAccount,
}

impl EntryKind {
    /// Every kind, in the order the API guide lists them.
    pub const ALL: [EntryKind; 15] = [
        EntryKind::CashDeposit,
        EntryKind::TopUp,
        EntryKind::BillPayment,
        EntryKind::ExternalBillPayment,
        EntryKind::Refund,
        EntryKind::ExternalRefund,
        EntryKind::Withdrawal,
        EntryKind::WithdrawalReturned,
        EntryKind::CashRefund,
        EntryKind::AdjustmentCredit,
        EntryKind::AdjustmentDebit,
        EntryKind::EpisodeDeposit,
        EntryKind::EpisodeDepositFromAccount,
        EntryKind::EpisodeRefund,
        EntryKind::EpisodeRefundToAccount,
    ];

    /// What an entry of this kind records (the API guide's words).
    pub fn meaning(self) -> &'static str {
        match self {
            EntryKind::CashDeposit => {
                "cash paid in (现金充值), also the first deposit of IssueCard"
            }
            EntryKind::TopUp => {
                "a bank-card or third-party top-up, credited once the bank approved"
            }
            EntryKind::BillPayment => "a bill paid from the account",
            EntryKind::ExternalBillPayment => {
                "a bill paid by bank card or third party; the balance is untouched"
            }
            EntryKind::Refund => "a refund (退费) to the account",
            EntryKind::ExternalRefund => {
                "a refund online to the card that paid; the balance is untouched"
            }
            EntryKind::Withdrawal => {
                "money taken out of the account (退预交金), as cash or to a card"
            }
            EntryKind::WithdrawalReturned => {
                "a withdrawal to a card the bank declined or reversed: the money back"
            }
            EntryKind::CashRefund => {
                "a refund (退费) paid out in cash at a window; the balance is untouched"
            }
            EntryKind::AdjustmentCredit => {
                "an adjustment (调账) into the account by finance, with a reason and a reference"
            }
            EntryKind::AdjustmentDebit => {
                "an adjustment (调账) out of the account by finance, with a reason and a reference"
            }
            EntryKind::EpisodeDeposit => {
                "an inpatient deposit (住院预交金) in cash or by card or channel; the balance is untouched; `bill` is the admission id"
            }
            EntryKind::EpisodeDepositFromAccount => {
                "an inpatient deposit from a prepaid account (the payer's); `bill` is the admission id"
            }
            EntryKind::EpisodeRefund => {
                "a discharge's surplus paid back online or in cash; the balance is untouched"
            }
            EntryKind::EpisodeRefundToAccount => {
                "a discharge's surplus paid into the patient's account"
            }
        }
    }

    /// Whether the entry belongs to an inpatient episode (its `bill` is then the admission id).
    pub fn is_episode(self) -> bool {
        matches!(
            self,
            EntryKind::EpisodeDeposit
                | EntryKind::EpisodeDepositFromAccount
                | EntryKind::EpisodeRefund
                | EntryKind::EpisodeRefundToAccount
        )
    }

    /// The signed effect of an entry of this kind on the balance: +1 credit, −1 debit, 0 none.
    pub fn balance_sign(self) -> i8 {
        match self {
            EntryKind::CashDeposit
            | EntryKind::TopUp
            | EntryKind::Refund
            | EntryKind::WithdrawalReturned
            | EntryKind::AdjustmentCredit
            | EntryKind::EpisodeRefundToAccount => 1,
            EntryKind::BillPayment
            | EntryKind::Withdrawal
            | EntryKind::AdjustmentDebit
            | EntryKind::EpisodeDepositFromAccount => -1,
            EntryKind::ExternalBillPayment
            | EntryKind::ExternalRefund
            | EntryKind::CashRefund
            | EntryKind::EpisodeDeposit
            | EntryKind::EpisodeRefund => 0,
        }
    }
}

/// One line of the journal: a movement of money, or a record of one that bypassed the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub txn: TxnId,
    pub request: RequestId,
    pub account: AccountId,
    pub kind: EntryKind,
    /// Always positive; the kind says the direction.
    pub amount: Money,
    pub balance_after: Money,
    pub channel: Channel,
    pub terminal: TerminalId,
    pub operator: Option<OperatorId>,
    pub bill: Option<BillId>,
    pub bank_ref: Option<BankRef>,
    pub at: Timestamp,
}

/// A count and total of one kind of entry through one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub kind: EntryKind,
    pub channel: Channel,
    pub count: u64,
    pub total: Money,
}

/// Adds one entry to report lines kept sorted by (kind, channel), so the lines are identical on
/// every node.
pub fn add_to_lines(lines: &mut Vec<ReportLine>, kind: EntryKind, channel: Channel, amount: Money) {
    let line = ReportLine {
        kind,
        channel,
        count: 1,
        total: amount,
    };
    merge_line(lines, &line).expect("report total within range");
}

/// Adds a line (its count and total) into lines kept sorted by (kind, channel); `None` when
/// the total would leave Money's range.
pub fn merge_line(lines: &mut Vec<ReportLine>, line: &ReportLine) -> Option<()> {
    match lines.binary_search_by(|l| (l.kind, l.channel).cmp(&(line.kind, line.channel))) {
        Ok(i) => {
            let into = &mut lines[i];
            into.count += line.count;
            into.total = into.total.checked_add(line.total)?;
        }
        Err(i) => lines.insert(i, line.clone()),
    }
    Some(())
}

/// 日结: the report of a closed window shift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftReport {
    pub terminal: TerminalId,
    pub seq: u64,
    pub operator: OperatorId,
    pub opened_at: Timestamp,
    pub closed_at: Timestamp,
    pub lines: Vec<ReportLine>,
    /// Cash the operator hands over: cash in minus cash out during the shift.
    pub cash_expected: Money,
}

/// A kiosk's cash collection: what the box should hold and what staff counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionReport {
    pub terminal: TerminalId,
    pub seq: u64,
    pub operator: OperatorId,
    pub at: Timestamp,
    pub expected: Money,
    pub counted: Money,
    /// counted − expected: positive is 长款 (over), negative 短款 (short).
    pub difference: Money,
}

/// How the bank's statement and the journal disagree about one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DifferenceKind {
    /// On the bank's statement, not completed in the journal (the bank holds money we did not
    /// book, 长款 at the bank).
    BankOnly,
    /// Completed in the journal, not on the statement (短款).
    JournalOnly,
    /// On both with different amounts.
    AmountDiffers,
}

/// One difference found by reconciliation, with what was done about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconDifference {
    pub bank_ref: BankRef,
    pub kind: DifferenceKind,
    pub bank_amount: Option<Money>,
    pub journal_amount: Option<Money>,
    /// The operation's state in the journal, when the journal has it.
    pub journal_state: Option<BankOpState>,
    /// "resolved: …" when reconciliation settled it, else what finance must do.
    pub resolution: String,
}

/// The day's reconciliation (对账) of the bank's statement with the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationReport {
    /// The business day, `YYYY-MM-DD` (Asia/Shanghai).
    pub date: String,
    pub bank_lines: u64,
    pub matched: u64,
    pub matched_total: Money,
    pub differences: Vec<ReconDifference>,
}

/// How HIS's list of charged bills and the ledger disagree about one bill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HisDifferenceKind {
    /// HIS charged it; the ledger has no payment of it that day.
    HisOnly,
    /// Paid that day in the ledger; HIS does not list it (a double collection, say).
    LedgerOnly,
    /// On both with different amounts.
    AmountDiffers,
}

/// One difference between HIS and the ledger, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HisDifference {
    pub bill: BillId,
    pub kind: HisDifferenceKind,
    pub his_amount: Option<Money>,
    pub ledger_amount: Option<Money>,
    /// "resolved: …" or "open: …", with what to do.
    pub resolution: String,
}

/// The day's reconciliation of HIS's charged bills with the bills paid in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HisReconciliationReport {
    /// The business day, `YYYY-MM-DD` (Asia/Shanghai).
    pub date: String,
    pub his_lines: u64,
    pub matched: u64,
    pub matched_total: Money,
    pub differences: Vec<HisDifference>,
}

/// A stored report, keyed by kind, terminal and sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    Shift(ShiftReport),
    Collection(CollectionReport),
    /// Stored again by a later run of the same day (the latest replaces it).
    Reconciliation(ReconciliationReport),
    TerminalDay(TerminalDayReport),
    /// HIS's reconciliation of a day (the latest run replaces it).
    HisReconciliation(HisReconciliationReport),
}

impl Report {
    /// The report's key: kind, terminal and sequence, in an order that sorts by terminal.
    pub fn key(&self) -> String {
        match self {
            Report::Shift(r) => format!("shift/{}/{:010}", r.terminal, r.seq),
            Report::Collection(r) => format!("collection/{}/{:010}", r.terminal, r.seq),
            Report::Reconciliation(r) => format!("recon/{}", r.date),
            Report::TerminalDay(r) => format!("day/{}/{}", r.day.date, r.terminal),
            Report::HisReconciliation(r) => format!("his-recon/{}", r.date),
        }
    }
}

/// How medical insurance (医保) split an insured bill, as HIS settled it with the insurance
/// system: the pooled fund (统筹), the patient's personal insurance account (个账), what the
/// patient pays (自付) and reductions (减免). Only the self-pay part moves money in yinyi (it
/// is the bill's amount); every part is kept for the reconciliation with the insurance bureau
/// (医保对账).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuranceSplit {
    pub settlement: InsuranceSettlementId,
    pub pooled: Money,
    pub personal_account: Money,
    pub self_pay: Money,
    pub reductions: Money,
}

impl InsuranceSplit {
    /// The most an insured bill's parts may come to together (the size of an inpatient
    /// settlement).
    pub fn max_total() -> Money {
        Money::from_yuan(10_000_000)
    }

    /// The split is one a bill may carry: no part negative, the self-pay part above zero and
    /// within `limit` (a bill insurance covers whole is settled in HIS alone), the parts
    /// together at most [`InsuranceSplit::max_total`]. Says what is wrong otherwise.
    pub fn check(&self, limit: Money) -> Result<(), String> {
        for (part, amount) in [
            ("pooled fund (统筹)", self.pooled),
            ("personal insurance account (个账)", self.personal_account),
            ("reductions (减免)", self.reductions),
        ] {
            if amount.is_negative() {
                return Err(format!("the {part} part {amount} is negative"));
            }
        }
        if !self.self_pay.is_positive() || self.self_pay > limit {
            return Err(format!(
                "the self-pay part (自付) {} is not above zero and at most {limit}: a bill \
                 insurance covers whole is settled in HIS alone",
                self.self_pay
            ));
        }
        self.checked_total()
            .filter(|total| *total <= Self::max_total())
            .map(|_| ())
            .ok_or_else(|| format!("the parts of the split together pass {}", Self::max_total()))
    }

    /// The bill's whole amount before the split (every part together), if it is in range.
    pub fn checked_total(&self) -> Option<Money> {
        [self.personal_account, self.self_pay, self.reductions]
            .into_iter()
            .try_fold(self.pooled, Money::checked_add)
    }
}

/// An insured bill's split, kept beside the bill from posting on, and its reversal when HIS
/// cancels the bill (an insurance settlement is reversed whole, 整单冲销).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsuredBill {
    pub bill: BillId,
    pub account: AccountId,
    pub split: InsuranceSplit,
    pub posted_at: Timestamp,
    pub reversed_at: Option<Timestamp>,
}
