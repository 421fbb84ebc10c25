//! Column families and key encodings. Integers are big-endian so keys sort numerically.

use yinyi_ledger::{AccountId, TxnId};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_SM_META: &str = "sm_meta";
pub const CF_ACCOUNTS: &str = "accounts";
pub const CF_CARDS: &str = "cards";
pub const CF_PERSONS: &str = "persons";
pub const CF_BILLS: &str = "bills";
pub const CF_JOURNAL: &str = "journal";
pub const CF_REQUESTS: &str = "requests";
pub const CF_BANK_OPS: &str = "bank_ops";
pub const CF_TERMINALS: &str = "terminals";
pub const CF_REPORTS: &str = "reports";
/// The audit trail's index: sensitive requests by time (the records are in `requests`).
pub const CF_AUDIT: &str = "audit";
/// Credentials by id.
pub const CF_CREDENTIALS: &str = "credentials";
/// Request records a prune may let go of, by time ([`audit_key`] layout; the records are in
/// `requests`): every request that is not in the audit trail.
pub const CF_REQUEST_EXPIRY: &str = "request_expiry";
/// Bank operations still PENDING or IN_DOUBT, by reference: what the saga recovery walks, so
/// its cost follows the operations open now, not every operation ever made.
pub const CF_BANK_OPS_OPEN: &str = "bank_ops_open";
/// Shift and collection reports by business day ([`report_day_key`]), so a day's report reads
/// that day's reports only.
pub const CF_REPORT_DAYS: &str = "report_days";
/// HIS's bill feed: what happened to bills (paid, refunded, cancelled) by transaction
/// ([`bill_event_key`]), so HIS reads from a cursor instead of asking after every bill.
pub const CF_BILL_FEED: &str = "bill_feed";
/// Bills paid, by business day ([`paid_by_day_key`]): HIS's daily reconciliation reads one
/// day's, not every bill.
pub const CF_PAID_BY_DAY: &str = "paid_by_day";

/// Inpatient episodes (`e/` + admission id), with two indexes in the same family: the episodes
/// not yet discharged by ward (`w/` ward `/` id: the reminder list and the deposits held per
/// ward read one ward's open episodes), and the discharged by business day (`d/` YYYYMMDD `/`
/// id). See [`episode_key`].
pub const CF_EPISODES: &str = "episodes";

/// The cluster's settings an admin changes through the log: the business rules (key `rules`).
pub const CF_SETTINGS: &str = "settings";
/// The key of the business rules in [`CF_SETTINGS`].
pub const SETTINGS_RULES: &[u8] = b"rules";

/// Insured bills' splits (`b/` + bill id), with three indexes in the same family: the bill of
/// each insurance settlement (`s/` settlement id, so one settlement is one bill), and the
/// settlements posted and reversed by business day (`d/` and `r/` YYYYMMDD `/` bill), which the
/// daily list for 医保对账 reads. See [`insured_bill_key`].
pub const CF_INSURANCE: &str = "insurance";

/// The families that hold the ledger's state: what a snapshot carries and the digest covers.
pub const STATE_FAMILIES: [&str; 19] = [
    CF_ACCOUNTS,
    CF_CARDS,
    CF_PERSONS,
    CF_BILLS,
    CF_JOURNAL,
    CF_REQUESTS,
    CF_BANK_OPS,
    CF_TERMINALS,
    CF_REPORTS,
    CF_AUDIT,
    CF_CREDENTIALS,
    CF_REQUEST_EXPIRY,
    CF_BANK_OPS_OPEN,
    CF_REPORT_DAYS,
    CF_BILL_FEED,
    CF_PAID_BY_DAY,
    CF_EPISODES,
    CF_SETTINGS,
    CF_INSURANCE,
];

/// State families that go without a memtable bloom: those written only in key order
/// (appended) and read by range, never looked up by key while applying; `episodes`, whose
/// few lookups (inpatient commands only, a few thousand a day) do not pay for a bloom's share of
/// the write-memory cap in every memtable; `settings`, one key; and `insurance`, read by key
/// when HIS posts an insured bill or cancels any bill (a few percent of the commands; the
/// table files' blooms still answer those lookups).
pub const NO_MEMTABLE_BLOOM_FAMILIES: [&str; 5] = [
    CF_BILL_FEED,
    CF_PAID_BY_DAY,
    CF_EPISODES,
    CF_SETTINGS,
    CF_INSURANCE,
];

/// `front` then `rest`, at compile time (`N` = `F + R`): the family lists below are each made
/// from the one before, so a new state family is listed once and every list carries it.
const fn prepend<const F: usize, const R: usize, const N: usize>(
    front: [&'static str; F],
    rest: [&'static str; R],
) -> [&'static str; N] {
    assert!(F + R == N, "the lengths add up");
    let mut out = [""; N];
    let mut i = 0;
    while i < F {
        out[i] = front[i];
        i += 1;
    }
    while i < N {
        out[i] = rest[i - F];
        i += 1;
    }
    out
}

/// Families a snapshot carries: the state and the state machine's meta (last applied,
/// membership, clock), so an installed snapshot is complete in itself. The order is the
/// snapshot format's (a record names its family by position): new families go last.
pub const SNAPSHOT_FAMILIES: [&str; STATE_FAMILIES.len() + 1] =
    prepend([CF_SM_META], STATE_FAMILIES);

/// Every family of a node's database.
pub const ALL_FAMILIES: [&str; SNAPSHOT_FAMILIES.len() + 2] =
    prepend([CF_RAFT_LOG, CF_RAFT_META], SNAPSHOT_FAMILIES);

/// `raft_meta` keys.
pub const META_VOTE: &[u8] = b"vote";
pub const META_COMMITTED: &[u8] = b"committed";
pub const META_LAST_PURGED: &[u8] = b"last_purged";
/// `sm_meta` keys.
pub const SM_LAST_APPLIED: &[u8] = b"last_applied";
pub const SM_MEMBERSHIP: &[u8] = b"membership";
/// The latest command time applied (milliseconds, big-endian i64): a new leader never stamps
/// below it.
pub const SM_CLOCK: &[u8] = b"clock";
/// Set once the request records are keyed by terminal and id ([`request_key`]).
pub const SM_REQUESTS_BY_TERMINAL: &[u8] = b"requests_by_terminal";
/// Set once `request_expiry`, `bank_ops_open` and `report_days` hold what was written before
/// they existed.
pub const SM_INDEXES_BUILT: &[u8] = b"lifetime_indexes_built";

/// `requests` keys: the terminal id, `/`, then the request id (neither may contain `/`), so
/// request ids are the terminal's own and a terminal's records sort together.
pub fn request_key(terminal: &str, request: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(terminal.len() + 1 + request.len());
    key.extend_from_slice(terminal.as_bytes());
    key.push(b'/');
    key.extend_from_slice(request.as_bytes());
    key
}

/// The audit index: the request's time (milliseconds, big-endian) then its `requests` key, so a
/// range scan from a time lists what happened since, in order.
pub fn audit_key(at_ms: i64, request_key: &[u8]) -> Vec<u8> {
    let mut key = (at_ms.max(0) as u64).to_be_bytes().to_vec();
    key.extend_from_slice(request_key);
    key
}

/// `report_days` keys: the business day (`YYYY-MM-DD`, China Standard Time), `/`, then the
/// report's own key in `reports`.
pub fn report_day_key(day: &str, report_key: &str) -> Vec<u8> {
    format!("{day}/{report_key}").into_bytes()
}

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> u64 {
    let bytes: [u8; 8] = key.try_into().expect("raft_log keys are 8 bytes");
    u64::from_be_bytes(bytes)
}

pub fn account_key(id: AccountId) -> [u8; 8] {
    id.0.to_be_bytes()
}

/// Journal entries sort by account, then by transaction: one account's history is one range.
pub fn journal_key(account: AccountId, txn: TxnId) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&account.0.to_be_bytes());
    key[8..].copy_from_slice(&txn.0.to_be_bytes());
    key
}

/// `bill_feed` key: the transaction (big-endian, so keys sort in log order) then the bill.
pub fn bill_event_key(txn: u64, bill: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + bill.len());
    key.extend_from_slice(&txn.to_be_bytes());
    key.extend_from_slice(bill.as_bytes());
    key
}

/// `paid_by_day` key: the business day (`YYYYMMDD`), `/`, then the bill.
pub fn paid_by_day_key(day: &str, bill: &str) -> Vec<u8> {
    format!("{day}/{bill}").into_bytes()
}

/// `episodes` key of an episode's record.
pub fn episode_key(id: &str) -> Vec<u8> {
    format!("e/{id}").into_bytes()
}

/// `episodes` key of a not yet discharged episode in its ward (the prefix of a ward's with an
/// empty id, of every ward's with an empty ward and id).
pub fn open_episode_key(ward: &str, id: &str) -> Vec<u8> {
    if ward.is_empty() {
        return b"w/".to_vec();
    }
    format!("w/{ward}/{id}").into_bytes()
}

/// `episodes` key of an episode discharged on business day `day` (`YYYYMMDD`).
pub fn discharged_episode_key(day: &str, id: &str) -> Vec<u8> {
    format!("d/{day}/{id}").into_bytes()
}

/// `insurance` key of an insured bill's split.
pub fn insured_bill_key(bill: &str) -> Vec<u8> {
    format!("b/{bill}").into_bytes()
}

/// `insurance` key of the bill posted under an insurance settlement.
pub fn settlement_key(settlement: &str) -> Vec<u8> {
    format!("s/{settlement}").into_bytes()
}

/// `insurance` key of an insured bill posted (`reversed` false) or reversed on business day
/// `day` (`YYYYMMDD`); with an empty bill, the prefix of the day's.
pub fn insurance_day_key(day: &str, reversed: bool, bill: &str) -> Vec<u8> {
    let kind = if reversed { 'r' } else { 'd' };
    format!("{kind}/{day}/{bill}").into_bytes()
}
