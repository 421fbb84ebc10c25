//! Settlement arithmetic (issue 19, part 3): no fen created or lost, whatever the lines, their
//! order, the rates or the days.

use proptest::prelude::*;
use rust_decimal::Decimal;
use yinyi_ledger::settlement::{MAX_RATE, compare, fee};
use yinyi_ledger::{
    BankRef, Direction, Money, SettlementLine, SettlementStatus, SettlementTerms, TxnId, settle,
};

fn line(n: u64, direction: Direction, cents: i64) -> SettlementLine {
    SettlementLine {
        bank_ref: BankRef::for_txn(TxnId(n)),
        direction,
        amount: Money::from_cents(cents),
    }
}

fn lines() -> impl Strategy<Value = Vec<SettlementLine>> {
    prop::collection::vec(
        (
            prop_oneof![3 => Just(Direction::Collected), 1 => Just(Direction::PaidOut)],
            1i64..=5_000_000,
        ),
        0..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(n, (d, cents))| line(n as u64, d, cents))
            .collect()
    })
}

/// A rate from 0 to 10%, at most six decimal places.
fn rate() -> impl Strategy<Value = Decimal> {
    (0i64..=100_000).prop_map(|millionths| Decimal::new(millionths, 6))
}

fn terms() -> impl Strategy<Value = SettlementTerms> {
    (rate(), rate()).prop_map(|(fee, reserve)| SettlementTerms::new(fee, reserve).unwrap())
}

proptest! {
    /// Every fen of a day is somewhere: due, fees, the reserve kept, or paid out.
    #[test]
    fn no_fen_is_created_or_lost(lines in lines(), terms in terms(), released in 0i64..1_000_000) {
        let released = Money::from_cents(released);
        let s = settle(&lines, terms, released);
        prop_assert_eq!(
            s.due.cents() + s.fees.cents() + s.reserve_kept.cents() + s.paid_out.cents(),
            s.collected.cents() + released.cents()
        );
        let collected: i64 = lines.iter().filter(|l| l.direction == Direction::Collected)
            .map(|l| l.amount.cents()).sum();
        let paid_out: i64 = lines.iter().filter(|l| l.direction == Direction::PaidOut)
            .map(|l| l.amount.cents()).sum();
        prop_assert_eq!((s.collected.cents(), s.paid_out.cents()), (collected, paid_out));
        prop_assert_eq!(s.lines, lines.len() as u64);
        prop_assert!(s.fees.cents() >= 0 && s.reserve_kept.cents() >= 0);
        prop_assert!(s.fees.cents() <= collected, "a fee of at most 10% never exceeds the line");
        // The reserve is kept only from what is left: never what makes the day negative.
        prop_assert!(s.reserve_kept.cents() <= (collected - paid_out - s.fees.cents()).max(0));
    }

    /// Each line's fee is its rate of the line to within half a fen, and exact when the
    /// product is a whole number of fen.
    #[test]
    fn a_fee_is_the_rate_of_its_line_to_half_a_fen(cents in 0i64..100_000_000, rate in rate()) {
        let amount = Money::from_cents(cents);
        let exact = amount.as_decimal() * rate * Decimal::ONE_HUNDRED;
        let charged = Decimal::from(fee(amount, rate).cents());
        prop_assert!((charged - exact).abs() <= Decimal::new(5, 1), "{charged} vs {exact}");
        if exact.fract().is_zero() {
            prop_assert_eq!(charged, exact);
        }
    }

    /// The order of a statement's lines changes nothing.
    #[test]
    fn the_order_of_the_lines_does_not_matter(mut lines in lines(), terms in terms(), seed: u64) {
        let before = settle(&lines, terms, Money::ZERO);
        let n = lines.len().max(1);
        lines.rotate_left(seed as usize % n);
        lines.reverse();
        prop_assert_eq!(settle(&lines, terms, Money::ZERO), before);
    }

    /// Over many days the reserve only moves money from one day to the next: what all the
    /// days paid plus the last day's reserve is what they collected less refunds and fees.
    #[test]
    fn the_reserve_rolls_over_and_nothing_is_lost(days in prop::collection::vec(lines(), 1..8), terms in terms()) {
        let mut released = Money::ZERO;
        let (mut due, mut net) = (0i64, 0i64);
        for lines in &days {
            let s = settle(lines, terms, released);
            due += s.due.cents();
            net += s.collected.cents() - s.paid_out.cents() - s.fees.cents();
            released = s.reserve_kept;
        }
        prop_assert_eq!(due + released.cents(), net);
    }

    /// What was received compares with what is due to the fen, and the difference is exact.
    #[test]
    fn a_payment_compares_to_the_fen(due in -1_000_000i64..100_000_000, received in proptest::option::of(-1_000_000i64..100_000_000)) {
        let (status, difference) = compare(Money::from_cents(due), received.map(Money::from_cents));
        match received {
            None => {
                prop_assert_eq!(status, SettlementStatus::Unsettled);
                prop_assert_eq!(difference.cents(), -due);
            }
            Some(r) => {
                prop_assert_eq!(difference.cents(), r - due);
                let expected = match r.cmp(&due) {
                    std::cmp::Ordering::Equal => SettlementStatus::Matched,
                    std::cmp::Ordering::Less => SettlementStatus::Short,
                    std::cmp::Ordering::Greater => SettlementStatus::Over,
                };
                prop_assert_eq!(status, expected);
            }
        }
    }
}

#[test]
fn a_day_settles_as_a_finance_office_would_count_it() {
    // Collected 100.00 + 33.33, refunded 20.00; fee 0.6% per line: 0.60 + 0.20 (0.19998);
    // reserve 5% of 133.33 = 6.67 (6.6665 rounded half up); yesterday's 4.00 released.
    let terms = SettlementTerms::parse("0.006", "0.05").unwrap();
    let lines = [
        line(1, Direction::Collected, 10_000),
        line(2, Direction::Collected, 3_333),
        line(3, Direction::PaidOut, 2_000),
    ];
    let s = settle(&lines, terms, Money::from_cents(400));
    assert_eq!(s.fees, Money::from_cents(80));
    assert_eq!(s.reserve_kept, Money::from_cents(667));
    assert_eq!(s.due, Money::from_cents(13_333 - 2_000 - 80 - 667 + 400));
    // A day of refunds only: nothing kept back, the hospital owes the link.
    let refunds = settle(&[line(4, Direction::PaidOut, 500)], terms, Money::ZERO);
    assert_eq!(
        (refunds.reserve_kept, refunds.due),
        (Money::ZERO, Money::from_cents(-500))
    );
}

#[test]
fn a_fee_of_exactly_half_a_fen_is_rounded_up() {
    // 四舍五入, not banker's rounding: 2.50 × 0.2% = 0.5 fen → 1 fen; 7.50 × 0.2% = 1.5 → 2.
    let rate = Decimal::new(2, 3);
    assert_eq!(fee(Money::from_cents(250), rate), Money::from_cents(1));
    assert_eq!(fee(Money::from_cents(750), rate), Money::from_cents(2));
    assert_eq!(fee(Money::from_cents(249), rate), Money::from_cents(0));
    // The reserve too: 5% of 0.10 = 0.5 fen → 1 fen.
    let terms = SettlementTerms::parse("0", "0.05").unwrap();
    let s = settle(&[line(1, Direction::Collected, 10)], terms, Money::ZERO);
    assert_eq!(s.reserve_kept, Money::from_cents(1));
}

#[test]
fn terms_out_of_range_are_refused_with_a_reason() {
    for (fee, reserve) in [
        ("-0.001", "0"),
        ("0.2", "0"),
        ("0", "0.1000001"),
        ("x", "0"),
    ] {
        let error = SettlementTerms::parse(fee, reserve).unwrap_err();
        assert!(error.contains("rate"), "{error}");
    }
    assert!(SettlementTerms::new(MAX_RATE, MAX_RATE).is_ok());
    assert_eq!(
        SettlementTerms::parse("0", "0").unwrap(),
        SettlementTerms::default()
    );
    // Shown as configured, without trailing zeros.
    assert_eq!(
        SettlementTerms::parse("0.00600", "0.050")
            .unwrap()
            .fee_rate
            .to_string(),
        "0.006"
    );
}
