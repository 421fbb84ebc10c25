//! Settlement of the bank link (清分结算, issue 19 part 3) through the API of a real 3-node
//! cluster and the bank simulator over TCP: what the link owes for the day from its statement
//! (collected, refunds netted, its fee on each line, the reserve kept back), matched to the
//! fen with what its settlement advice says it paid; a short payment and an unsettled day are
//! found exactly, and bad ranges are refused.

use std::time::Duration;

use yinyi_api::v1::*;
use yinyi_ledger::{Money, SettlementTerms};
use yinyi_tests::bank_cluster::{BankCluster, reason, today};

const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0501";
const HIS: &str = "H-HIS";
const CARD: &str = "HC0501";
const TOKEN: &str = "tok_bank_0501";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_links_settlement_is_matched_to_the_fen_and_differences_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let c = BankCluster::start_with(
        dir.path(),
        Money::from_yuan(1_000),
        &[KIOSK, HIS],
        T,
        &["--bank-fee-rate", "0.006", "--bank-reserve-rate", "0.05"],
    )
    .await
    .unwrap();
    c.sim
        .set_settlement_terms(SettlementTerms::parse("0.006", "0.05").unwrap());
    let client = &c.client;
    client
        .issue_card(IssueCardRequest {
            request_id: "K-0501:1".into(),
            terminal_id: KIOSK.into(),
            card_no: CARD.into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "Settled Patient".into(),
            person_key: format!("{:064x}", 501),
            id_masked: "1101**********0501".into(),
            first_deposit: "10.00".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for (n, amount) in [(2, "100.00"), (3, "33.33")] {
        let reply = client
            .top_up_bank_card(TopUpBankCardRequest {
                request_id: format!("K-0501:{n}"),
                terminal_id: KIOSK.into(),
                card_no: CARD.into(),
                bank_card_token: TOKEN.into(),
                bank_card_masked: "6222****0501".into(),
                amount: amount.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(reply.state, "COMPLETED");
    }
    // A bill paid by card and refunded online: collected, then paid out.
    client
        .post_bill(PostBillRequest {
            request_id: "H-HIS:1".into(),
            terminal_id: HIS.into(),
            bill_id: "B-501".into(),
            card_no: CARD.into(),
            kind: BillKind::Outpatient as i32,
            amount: "20.00".into(),
            insurance: None,
        })
        .await
        .unwrap();
    let paid = client
        .pay_bill(PayBillRequest {
            request_id: "K-0501:4".into(),
            terminal_id: KIOSK.into(),
            bill_id: "B-501".into(),
            card_no: CARD.into(),
            bank_card_token: TOKEN.into(),
            bank_card_masked: "6222****0501".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(paid.bank_state, "COMPLETED");
    client
        .cancel_bill(CancelBillRequest {
            request_id: "H-HIS:2".into(),
            terminal_id: HIS.into(),
            bill_id: "B-501".into(),
            amount: String::new(),
        })
        .await
        .unwrap();
    let refunded = client
        .refund(RefundRequest {
            request_id: "K-0501:5".into(),
            terminal_id: KIOSK.into(),
            bill_id: "B-501".into(),
            card_no: CARD.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refunded.bank_state, "COMPLETED");

    let day = today();
    let settle = |from: String, to: String| async move {
        client.settlement(SettlementRequest { from, to }).await
    };
    // Collected 100.00 + 33.33 + 20.00 = 153.33; paid out 20.00; fees 0.6% a line: 0.60 +
    // 0.20 + 0.12 = 0.92; reserve 5% of 153.33 = 7.67 (7.6665); nothing released (the day
    // before had nothing): due 124.74.
    let reply = settle(day.clone(), String::new()).await.unwrap();
    assert_eq!(
        (reply.fee_rate.as_str(), reply.reserve_rate.as_str()),
        ("0.006", "0.05")
    );
    let d = &reply.days[..];
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!(
        (
            d.lines,
            d.collected.as_str(),
            d.paid_out.as_str(),
            d.fees.as_str(),
            d.reserve_kept.as_str(),
            d.reserve_released.as_str(),
            d.due.as_str()
        ),
        (4, "153.33", "20.00", "0.92", "7.67", "0.00", "124.74"),
        "{d:?}"
    );
    assert_eq!(
        (
            d.status.as_str(),
            d.received.as_str(),
            d.difference.as_str()
        ),
        ("MATCHED", "124.74", "0.00")
    );
    assert!(!d.reference.is_empty());

    // The link pays 1.00 short: found to the fen, with its reference.
    let compact = day.replace('-', "");
    c.sim
        .tamper_settlement(&compact, Some(Money::from_cents(12_374)));
    let d = settle(day.clone(), String::new()).await.unwrap().days[0].clone();
    assert_eq!(
        (
            d.status.as_str(),
            d.received.as_str(),
            d.difference.as_str()
        ),
        ("SHORT", "123.74", "-1.00")
    );
    assert_eq!(d.reference, format!("STL{compact}"));
    // Paid 0.01 too much: found too.
    c.sim
        .tamper_settlement(&compact, Some(Money::from_cents(12_475)));
    let d = settle(day.clone(), String::new()).await.unwrap().days[0].clone();
    assert_eq!((d.status.as_str(), d.difference.as_str()), ("OVER", "0.01"));
    // Not paid at all: unsettled, the whole amount outstanding.
    c.sim.tamper_settlement(&compact, None);
    let d = settle(day.clone(), String::new()).await.unwrap().days[0].clone();
    assert_eq!(
        (
            d.status.as_str(),
            d.received.as_str(),
            d.difference.as_str()
        ),
        ("UNSETTLED", "", "-124.74")
    );

    // A range: the day before had nothing and is settled at nothing.
    let yesterday = yinyi_ledger::BusinessDay::parse(&day)
        .unwrap()
        .previous()
        .to_string();
    let reply = settle(yesterday.clone(), day.clone()).await.unwrap();
    let days: Vec<_> = reply
        .days
        .iter()
        .map(|d| (d.date.as_str(), d.due.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        days,
        vec![
            (yesterday.as_str(), "0.00", "MATCHED"),
            (day.as_str(), "124.74", "UNSETTLED")
        ]
    );

    // Bad ranges: a clear refusal each.
    assert_eq!(
        reason(settle("2026-13-01".into(), String::new()).await),
        "INVALID_ID"
    );
    assert_eq!(
        reason(settle(day.clone(), yesterday.clone()).await),
        "INVALID_REQUEST"
    );
    assert_eq!(
        reason(settle("2026-01-01".into(), "2026-02-01".into()).await),
        "INVALID_REQUEST",
        "32 days"
    );
    assert_eq!(
        reason(settle("0000-01-01".into(), String::new()).await),
        "INVALID_ID"
    );
    let month = settle("2026-01-01".into(), "2026-01-31".into())
        .await
        .unwrap();
    assert_eq!(month.days.len(), 31);
}
