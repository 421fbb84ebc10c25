//! `Money`: an amount of CNY at exactly two decimal places, on `rust_decimal`.
//!
//! Parsing is strict: the wire carries a plain decimal string ("12.30"); anything that would need
//! rounding, an exponent, a sign where none is allowed or more than the single-transaction limit
//! is an error with its own variant, never a silent fix. Arithmetic is checked.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most integer digits an amount may have on the wire (below `i64` cents by a wide margin).
pub const MAX_INTEGER_DIGITS: usize = 13;

/// Why a textual amount was refused. Every variant maps to the reason code `INVALID_AMOUNT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a plain decimal number such as \"12.30\"")]
    Malformed(String),
    #[error("amount {0:?} has more than two decimal places")]
    TooManyDecimals(String),
    #[error("amount {0:?} has more than {MAX_INTEGER_DIGITS} integer digits")]
    OutOfRange(String),
    #[error("amount {0} must be greater than zero")]
    NotPositive(Money),
    #[error("amount {amount} is above the single-transaction limit of {limit}")]
    AboveLimit { amount: Money, limit: Money },
}

/// An amount of CNY (元) with exactly two decimal places (分).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// An amount from a whole number of fen (cents).
    pub fn from_cents(cents: i64) -> Money {
        Money(Decimal::new(cents, 2))
    }

    /// An amount from whole yuan.
    pub fn from_yuan(yuan: i64) -> Money {
        Money::from_cents(yuan.checked_mul(100).expect("yuan amount fits i64 fen"))
    }

    /// The amount in fen (cents). Exact: every `Money` holds at most two decimal places.
    pub fn cents(self) -> i64 {
        let scaled = self.0 * Decimal::ONE_HUNDRED;
        i64::try_from(scaled).expect("a Money is at most 13 integer digits, so its fen fit i64")
    }

    /// The underlying decimal, at scale 2.
    pub fn as_decimal(self) -> Decimal {
        self.0
    }

    /// Parses a signed amount: `-?digits(.d{1,2})?`. Used for limits and reports; requests use
    /// [`Money::parse_positive`].
    pub fn parse(text: &str) -> Result<Money, AmountError> {
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        let malformed = || AmountError::Malformed(text.to_string());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (integer, fraction) = match unsigned.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (unsigned, None),
        };
        if integer.is_empty() || !integer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let fraction = match fraction {
            None => "",
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(malformed());
            }
            Some(f) if f.len() > 2 => return Err(AmountError::TooManyDecimals(text.to_string())),
            Some(f) => f,
        };
        let significant = integer.trim_start_matches('0');
        if significant.len() > MAX_INTEGER_DIGITS {
            return Err(AmountError::OutOfRange(text.to_string()));
        }
        let mut cents: i64 = 0;
        for digit in significant.bytes().chain(fraction.bytes()) {
            cents = cents * 10 + i64::from(digit - b'0');
        }
        for _ in fraction.len()..2 {
            cents *= 10;
        }
        Ok(Money::from_cents(if negative { -cents } else { cents }))
    }

    /// Parses an amount a request moves: more than zero and at most `limit`.
    pub fn parse_positive(text: &str, limit: Money) -> Result<Money, AmountError> {
        Money::parse(text)?.check_positive(limit)
    }

    /// Checks an amount a request moves: more than zero and at most `limit`.
    pub fn check_positive(self, limit: Money) -> Result<Money, AmountError> {
        if !self.is_positive() {
            return Err(AmountError::NotPositive(self));
        }
        if self > limit {
            return Err(AmountError::AboveLimit {
                amount: self,
                limit,
            });
        }
        Ok(self)
    }

    pub fn is_positive(self) -> bool {
        self.0 > Decimal::ZERO
    }

    pub fn is_negative(self) -> bool {
        self.0 < Decimal::ZERO
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// True when the amount is a whole number of yuan (what a note acceptor takes).
    pub fn is_whole_yuan(self) -> bool {
        self.cents() % 100 == 0
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    pub fn negated(self) -> Money {
        Money(-self.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always two places: "12.30", "-0.05", "0.00".
        let cents = self.cents();
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "¥{self}")
    }
}

impl std::str::FromStr for Money {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse(s)
    }
}

/// On disk and between nodes an amount is its fen as an `i64`: compact, exact, and identical on
/// every node.
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.cents())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let cents = i64::deserialize(deserializer)?;
        let limit = 10_i64.pow(MAX_INTEGER_DIGITS as u32) * 100;
        if cents.abs() >= limit {
            return Err(serde::de::Error::custom("amount out of range"));
        }
        Ok(Money::from_cents(cents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> Money {
        Money::from_yuan(50_000)
    }

    #[test]
    fn parses_plain_decimals_at_scale_two() {
        assert_eq!(Money::parse("12.30").unwrap(), Money::from_cents(1230));
        assert_eq!(Money::parse("12.3").unwrap(), Money::from_cents(1230));
        assert_eq!(Money::parse("12").unwrap(), Money::from_cents(1200));
        assert_eq!(Money::parse("0.01").unwrap(), Money::from_cents(1));
        assert_eq!(Money::parse("-0.05").unwrap(), Money::from_cents(-5));
        assert_eq!(Money::parse("007.50").unwrap(), Money::from_cents(750));
        assert_eq!(Money::from_cents(1230).to_string(), "12.30");
        assert_eq!(Money::from_cents(-5).to_string(), "-0.05");
        assert_eq!(Money::ZERO.to_string(), "0.00");
    }

    #[test]
    fn more_than_two_decimals_is_refused_not_rounded() {
        assert_eq!(
            Money::parse("1.001"),
            Err(AmountError::TooManyDecimals("1.001".into()))
        );
        assert_eq!(
            Money::parse("1.000"),
            Err(AmountError::TooManyDecimals("1.000".into()))
        );
    }

    #[test]
    fn malformed_amounts_are_refused() {
        for text in [
            "abc", "1e9", "+5", " 5", "5 ", "1.", ".5", "1.2.3", "--1", "1,00", "NaN", "-",
        ] {
            assert!(
                matches!(Money::parse(text), Err(AmountError::Malformed(_))),
                "{text:?} should be malformed"
            );
        }
        assert_eq!(Money::parse(""), Err(AmountError::Empty));
    }

    #[test]
    fn huge_amounts_are_out_of_range() {
        let huge = "9".repeat(40);
        assert!(matches!(
            Money::parse(&huge),
            Err(AmountError::OutOfRange(_))
        ));
        assert!(Money::parse("9999999999999.99").is_ok());
        assert!(matches!(
            Money::parse("10000000000000"),
            Err(AmountError::OutOfRange(_))
        ));
    }

    #[test]
    fn positive_amounts_respect_zero_sign_and_limit() {
        assert_eq!(
            Money::parse_positive("0", limit()),
            Err(AmountError::NotPositive(Money::ZERO))
        );
        assert_eq!(
            Money::parse_positive("-1", limit()),
            Err(AmountError::NotPositive(Money::from_yuan(-1)))
        );
        assert_eq!(
            Money::parse_positive("50000.01", limit()),
            Err(AmountError::AboveLimit {
                amount: Money::from_cents(5_000_001),
                limit: limit()
            })
        );
        assert_eq!(
            Money::parse_positive("50000.00", limit()),
            Ok(Money::from_yuan(50_000))
        );
    }

    #[test]
    fn arithmetic_is_exact_and_checked() {
        let a = Money::parse("0.10").unwrap();
        let b = Money::parse("0.20").unwrap();
        assert_eq!(a.checked_add(b), Some(Money::parse("0.30").unwrap()));
        assert_eq!(a.checked_sub(b), Some(Money::parse("-0.10").unwrap()));
        assert!(Money::from_yuan(3).is_whole_yuan());
        assert!(!Money::from_cents(301).is_whole_yuan());
    }

    #[test]
    fn serializes_as_fen() {
        let config = bincode::config::standard();
        let m = Money::from_cents(-12345);
        let bytes = bincode::serde::encode_to_vec(m, config).unwrap();
        let (back, _): (Money, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, m);
    }
}
