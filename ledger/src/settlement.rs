//! Settlement (清分结算): what a bank or channel link owes the hospital for one business day,
//! paid into the hospital's account the next (T+1), and whether it arrived.
//!
//! From the link's statement of the day: what it collected from payers for the hospital
//! (card debits, channel payments, captures), less what it paid out to payers for the hospital
//! (online refunds, withdrawals), less its fee on each collected line, less the reserve it
//! keeps back for the next day's refunds; plus the reserve it kept the day before, released
//! now. Every amount is in fen and the arithmetic is exact: a fee is rounded half away from
//! zero to the fen line by line (四舍五入, as a link's fee statement shows it), the reserve once
//! on the day's collections, and
//! `due + fees + reserve kept + paid out == collected + reserve released` always holds.
//! Pure: the node fetches the statements and the link's settlement advice, and compares.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::ids::BankRef;
use crate::money::Money;

/// The largest fee or reserve rate a link may be configured with (10%).
pub const MAX_RATE: Decimal = Decimal::from_parts(1, 0, 0, false, 1);

/// A link's settlement terms: its fee and its reserve, each a fraction of what it collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SettlementTerms {
    /// Of each collected line, e.g. `0.006` (0.6%).
    pub fee_rate: Decimal,
    /// Of the day's collections, kept back for the next day's refunds and released with the
    /// next day's settlement, e.g. `0.05`.
    pub reserve_rate: Decimal,
}

impl SettlementTerms {
    /// Terms with both rates between 0 and [`MAX_RATE`], at most six decimal places.
    pub fn new(fee_rate: Decimal, reserve_rate: Decimal) -> Result<SettlementTerms, String> {
        for (name, rate) in [("fee rate", fee_rate), ("reserve rate", reserve_rate)] {
            if rate.is_sign_negative() || rate > MAX_RATE || rate.normalize().scale() > 6 {
                return Err(format!(
                    "{name} {rate}: a fraction from 0 to {MAX_RATE}, at most six decimal places (0.006 is 0.6%)"
                ));
            }
        }
        Ok(SettlementTerms {
            fee_rate: fee_rate.normalize(),
            reserve_rate: reserve_rate.normalize(),
        })
    }

    /// Parses `fee_rate` and `reserve_rate` as decimal fractions (`"0.006"`).
    pub fn parse(fee_rate: &str, reserve_rate: &str) -> Result<SettlementTerms, String> {
        let rate = |name: &str, text: &str| {
            text.trim()
                .parse::<Decimal>()
                .map_err(|_| format!("{name} {text:?} is not a decimal fraction such as 0.006"))
        };
        SettlementTerms::new(
            rate("fee rate", fee_rate)?,
            rate("reserve rate", reserve_rate)?,
        )
    }
}

/// Which way a statement line moved money for the hospital.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Taken from a payer for the hospital (a debit, a channel payment, a capture).
    Collected,
    /// Paid to a payer for the hospital (an online refund, a withdrawal to a card).
    PaidOut,
}

/// One line of the link's statement, as settlement counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementLine {
    pub bank_ref: BankRef,
    pub direction: Direction,
    pub amount: Money,
}

/// What the link owes for one business day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub lines: u64,
    pub collected: Money,
    pub paid_out: Money,
    pub fees: Money,
    pub reserve_kept: Money,
    pub reserve_released: Money,
    /// Negative when the day's refunds exceed what is left: the hospital owes the link.
    pub due: Money,
}

fn to_fen(value: Decimal, strategy: RoundingStrategy) -> i64 {
    let fen = (value * Decimal::ONE_HUNDRED).round_dp_with_strategy(0, strategy);
    i64::try_from(fen).expect("a fee or reserve is below the amount it is taken from")
}

/// The link's fee on one collected line: `rate` of it, rounded half away from zero to the fen.
pub fn fee(amount: Money, rate: Decimal) -> Money {
    Money::from_cents(to_fen(
        amount.as_decimal() * rate,
        RoundingStrategy::MidpointAwayFromZero,
    ))
}

/// The settlement of one day's `lines` under `terms`, with `reserve_released` (the reserve
/// kept the day before) paid back. The reserve is kept only from what is left after refunds
/// and fees, never making the amount due negative by itself.
pub fn settle(
    lines: &[SettlementLine],
    terms: SettlementTerms,
    reserve_released: Money,
) -> Settlement {
    let (mut collected, mut paid_out, mut fees) = (0i64, 0i64, 0i64);
    for line in lines {
        match line.direction {
            Direction::Collected => {
                collected += line.amount.cents();
                fees += fee(line.amount, terms.fee_rate).cents();
            }
            Direction::PaidOut => paid_out += line.amount.cents(),
        }
    }
    let left = collected - paid_out - fees;
    let reserve = to_fen(
        Money::from_cents(collected).as_decimal() * terms.reserve_rate,
        RoundingStrategy::MidpointAwayFromZero,
    )
    .min(left.max(0));
    Settlement {
        lines: lines.len() as u64,
        collected: Money::from_cents(collected),
        paid_out: Money::from_cents(paid_out),
        fees: Money::from_cents(fees),
        reserve_kept: Money::from_cents(reserve),
        reserve_released,
        due: Money::from_cents(left - reserve + reserve_released.cents()),
    }
}

/// How the link's payment for a day compares with what it owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementStatus {
    /// Received to the fen.
    Matched,
    /// Received less than due.
    Short,
    /// Received more than due.
    Over,
    /// Nothing received (yet): the link has not settled the day.
    Unsettled,
}

impl SettlementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementStatus::Matched => "MATCHED",
            SettlementStatus::Short => "SHORT",
            SettlementStatus::Over => "OVER",
            SettlementStatus::Unsettled => "UNSETTLED",
        }
    }
}

/// Compares what the link paid for the day (`received`, when it paid) with what it owes:
/// the status and received − due.
pub fn compare(due: Money, received: Option<Money>) -> (SettlementStatus, Money) {
    let Some(received) = received else {
        return (SettlementStatus::Unsettled, due.negated());
    };
    let difference = Money::from_cents(received.cents() - due.cents());
    let status = match difference.cents() {
        0 => SettlementStatus::Matched,
        d if d < 0 => SettlementStatus::Short,
        _ => SettlementStatus::Over,
    };
    (status, difference)
}
