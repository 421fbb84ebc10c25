//! Identifiers and their textual forms.
//!
//! Every id that arrives as text is validated here, once; the rest of the code holds only valid
//! ids. Numeric ids (`AccountId`, `TxnId`) are allocated by the cluster, never by clients.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a textual id was refused. Maps to the reason code `INVALID_ID`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {text:?}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub text: String,
    pub rule: &'static str,
}

fn check_chars(
    kind: &'static str,
    text: &str,
    min: usize,
    max: usize,
    allowed: fn(u8) -> bool,
    rule: &'static str,
) -> Result<(), IdError> {
    if text.len() < min || text.len() > max || !text.bytes().all(allowed) {
        return Err(IdError {
            kind,
            text: truncate_for_error(text),
            rule,
        });
    }
    Ok(())
}

/// Errors echo at most 64 characters of what they refuse, so a huge input stays a short message.
fn truncate_for_error(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The largest number of commands one Raft entry may carry; a `TxnId` packs the entry's log
/// index and the command's position in it.
pub const MAX_COMMANDS_PER_ENTRY: u64 = 1 << 12;

/// A journal transaction id: the Raft log index that applied it and the command's position in
/// that entry (an entry carries a batch of commands). Ordered as the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId(pub u64);

impl TxnId {
    pub fn new(log_index: u64, position: u64) -> TxnId {
        assert!(
            position < MAX_COMMANDS_PER_ENTRY,
            "position {position} beyond MAX_COMMANDS_PER_ENTRY"
        );
        let base = log_index
            .checked_mul(MAX_COMMANDS_PER_ENTRY)
            .expect("log index below 2^52");
        TxnId(base + position)
    }

    pub fn log_index(self) -> u64 {
        self.0 / MAX_COMMANDS_PER_ENTRY
    }

    pub fn position(self) -> u64 {
        self.0 % MAX_COMMANDS_PER_ENTRY
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.log_index(), self.position())
    }
}

/// A patient account (预交金账户), allocated by the cluster: the `TxnId` of the `IssueCard` that
/// opened it, so allocation needs no counter and is the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AccountId(pub u64);

impl AccountId {
    pub fn parse(text: &str) -> Result<AccountId, IdError> {
        check_chars(
            "account id",
            text,
            1,
            20,
            |b| b.is_ascii_digit(),
            "1 to 20 digits",
        )?;
        match text.parse::<u64>() {
            Ok(n) if n > 0 && !text.starts_with('0') => Ok(AccountId(n)),
            _ => Err(IdError {
                kind: "account id",
                text: text.to_string(),
                rule: "a positive number without leading zeros",
            }),
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $min:literal, $max:literal, $allowed:expr, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// The syntax, as the API guide and refusals state it.
            pub const RULE: &'static str = $rule;

            pub fn parse(text: &str) -> Result<$name, IdError> {
                check_chars($kind, text, $min, $max, $allowed, $rule)?;
                Ok($name(text.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_request_char(b: u8) -> bool {
    is_id_char(b) || b == b'.' || b == b':'
}

text_id!(
    /// A card number (就诊卡, 健康卡, 社保卡 …): 4 to 32 letters, digits, `-` or `_`.
    CardNo, "card number", 4, 32, is_id_char, "4 to 32 letters, digits, '-' or '_'"
);
text_id!(
    /// A client-made request id (terminal id + the terminal's serial, 流水号): 1 to 64 of
    /// letters, digits, `-`, `_`, `.`, `:`.
    RequestId, "request id", 1, 64, is_request_char, "1 to 64 letters, digits, '-', '_', '.' or ':'"
);
text_id!(
    /// A bill id from HIS: 1 to 40 letters, digits, `-` or `_`.
    BillId, "bill id", 1, 40, is_id_char, "1 to 40 letters, digits, '-' or '_'"
);
text_id!(
    /// An inpatient admission (住院号) from HIS, naming one episode: 1 to 40 letters, digits,
    /// `-` or `_` (the shape of a bill id).
    AdmissionId, "admission id", 1, 40, is_id_char, "1 to 40 letters, digits, '-' or '_'"
);
text_id!(
    /// The medical-insurance settlement (医保结算号) of an insured bill, as the insurance
    /// system gave it to HIS: 1 to 40 letters, digits, `-` or `_`.
    InsuranceSettlementId, "insurance settlement id", 1, 40, is_id_char, "1 to 40 letters, digits, '-' or '_'"
);
text_id!(
    /// A ward (病区) as HIS names it: 1 to 32 letters, digits, `-` or `_`.
    WardId, "ward id", 1, 32, is_id_char, "1 to 32 letters, digits, '-' or '_'"
);
text_id!(
    /// An operator (cashier, supervisor) id: 1 to 32 letters, digits, `-` or `_`.
    OperatorId, "operator id", 1, 32, is_id_char, "1 to 32 letters, digits, '-' or '_'"
);
text_id!(
    /// The keyed hash of a person's ID number (real name), as 64 lowercase hex digits. The
    /// ledger never sees the ID number itself.
    PersonKey, "person key", 64, 64, |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
    "64 lowercase hex digits (a keyed hash of the ID number)"
);
text_id!(
    /// A bank card token from the bank's tokenization (never the card number): 8 to 64 letters,
    /// digits, `-` or `_`.
    CardToken, "bank card token", 8, 64, is_id_char, "8 to 64 letters, digits, '-' or '_'"
);

/// The reference of a bank operation (检索参考号), sent to the bank and deduplicated there. Made
/// from the `TxnId` of the command that started the operation, so it is unique and identical on
/// every node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BankRef(String);

impl BankRef {
    pub fn for_txn(txn: TxnId) -> BankRef {
        BankRef(format!("Y{:019}", txn.0))
    }

    /// The reference of the `part`-th of several operations one command starts (a discharge
    /// refunds each online deposit by its own): `Z`, the transaction in 16 hex digits, the
    /// part in 3 digits. Never equal to a `for_txn` reference, nor to another part's.
    pub fn for_txn_part(txn: TxnId, part: u16) -> BankRef {
        assert!(part < 1000, "at most 1000 parts");
        BankRef(format!("Z{:016X}{part:03}", txn.0))
    }

    pub fn parse(text: &str) -> Result<BankRef, IdError> {
        let rule = "'Y' and 19 digits, or 'Z', 16 hex digits and 3 digits";
        let b = text.as_bytes();
        let valid = text.len() == 20
            && match b[0] {
                b'Y' => b[1..].iter().all(u8::is_ascii_digit),
                b'Z' => {
                    b[1..17]
                        .iter()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                        && b[17..].iter().all(u8::is_ascii_digit)
                }
                _ => false,
            };
        if !valid {
            return Err(IdError {
                kind: "bank reference",
                text: truncate_for_error(text),
                rule,
            });
        }
        Ok(BankRef(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BankRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of client a terminal is; its id's first letter says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TerminalKind {
    /// 自助机, `K-…`
    Kiosk,
    /// 收费窗口, `W-…`
    Window,
    /// in-app payment channel, `M-…`
    Mobile,
    /// the hospital information system, `H-…`
    His,
    /// an administrator's console, `A-…`
    Admin,
    /// the cluster itself (saga steps, recovery, reconciliation), `S-…`
    System,
}

impl TerminalKind {
    pub fn prefix(self) -> char {
        match self {
            TerminalKind::Kiosk => 'K',
            TerminalKind::Window => 'W',
            TerminalKind::Mobile => 'M',
            TerminalKind::His => 'H',
            TerminalKind::Admin => 'A',
            TerminalKind::System => 'S',
        }
    }

    fn from_prefix(c: u8) -> Option<TerminalKind> {
        Some(match c {
            b'K' => TerminalKind::Kiosk,
            b'W' => TerminalKind::Window,
            b'M' => TerminalKind::Mobile,
            b'H' => TerminalKind::His,
            b'A' => TerminalKind::Admin,
            b'S' => TerminalKind::System,
            _ => return None,
        })
    }
}

/// A terminal id such as `K-0101` (kiosk), `W-03` (window), `M-WX` (mobile channel), `H-HIS`:
/// a kind letter, `-`, then 1 to 16 uppercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TerminalId(String);

impl TerminalId {
    /// The syntax, as the API guide and refusals state it.
    pub const RULE: &'static str =
        "K-, W-, M-, H-, A- or S- and 1 to 16 uppercase letters or digits";

    pub fn parse(text: &str) -> Result<TerminalId, IdError> {
        let bytes = text.as_bytes();
        let valid = bytes.len() >= 3
            && bytes.len() <= 18
            && TerminalKind::from_prefix(bytes[0]).is_some()
            && bytes[1] == b'-'
            && bytes[2..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid {
            return Err(IdError {
                kind: "terminal id",
                text: truncate_for_error(text),
                rule: TerminalId::RULE,
            });
        }
        Ok(TerminalId(text.to_string()))
    }

    pub fn kind(&self) -> TerminalKind {
        TerminalKind::from_prefix(self.0.as_bytes()[0]).expect("validated at parse")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_ids_carry_their_kind() {
        assert_eq!(
            TerminalId::parse("K-0101").unwrap().kind(),
            TerminalKind::Kiosk
        );
        assert_eq!(
            TerminalId::parse("W-03").unwrap().kind(),
            TerminalKind::Window
        );
        assert_eq!(
            TerminalId::parse("M-WX").unwrap().kind(),
            TerminalKind::Mobile
        );
        for bad in [
            "X-01",
            "K-",
            "K01",
            "k-01",
            "K-ab",
            "K-01234567890123456",
            "",
        ] {
            assert!(TerminalId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_ids_are_validated() {
        assert!(CardNo::parse("HC0001").is_ok());
        assert!(CardNo::parse("abc").is_err());
        assert!(CardNo::parse("HC 0001").is_err());
        assert!(CardNo::parse(&"9".repeat(33)).is_err());
        assert!(RequestId::parse("K-0101:000017").is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse(&"r".repeat(65)).is_err());
        assert!(BillId::parse("REG-2026-0001").is_ok());
        assert!(BillId::parse("bill/1").is_err());
        assert!(PersonKey::parse(&"ab".repeat(32)).is_ok());
        assert!(PersonKey::parse(&"AB".repeat(32)).is_err());
        assert!(CardToken::parse("tok_12345678").is_ok());
    }

    #[test]
    fn account_ids_are_positive_numbers() {
        assert_eq!(AccountId::parse("4097").unwrap(), AccountId(4097));
        for bad in ["0", "007", "-1", "1a", "", "123456789012345678901"] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn txn_ids_pack_log_index_and_position() {
        let t = TxnId::new(77, 5);
        assert_eq!((t.log_index(), t.position()), (77, 5));
        assert!(TxnId::new(77, 5) < TxnId::new(78, 0));
        assert_eq!(t.to_string(), "77.5");
        let r = BankRef::for_txn(t);
        assert_eq!(BankRef::parse(r.as_str()).unwrap(), r);
        let part = BankRef::for_txn_part(TxnId(u64::MAX), 999);
        assert_eq!(part.as_str(), "ZFFFFFFFFFFFFFFFF999");
        assert_eq!(BankRef::parse(part.as_str()).unwrap(), part);
        assert_ne!(BankRef::for_txn_part(t, 1), BankRef::for_txn_part(t, 2));
        assert!(BankRef::parse("Zfffffffffffffff0001").is_err());
        assert!(BankRef::parse("Z000000000000000A00B").is_err());
        assert!(BankRef::parse("Y123").is_err());
    }

    #[test]
    fn error_text_is_bounded() {
        let huge = "x".repeat(100_000);
        let err = CardNo::parse(&huge).unwrap_err();
        assert!(err.to_string().len() < 300);
    }
}
