//! Insured bills (issue 19, part 1) through the API of a real 3-node cluster: HIS posts a bill
//! with its insurance split, the patient pays the self-pay part, GetBill shows every part, the
//! day's list for 医保对账 carries each settlement and its totals, an insured bill is cancelled
//! whole only (its settlement reversed, the self-pay part refunded), and bad splits are refused
//! with nothing written.

use std::time::Duration;

use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_ledger::Money;
use yinyi_tests::bank_cluster::{BankCluster, reason, today};

const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0301";
const HIS: &str = "H-HIS";

fn split(
    settlement: &str,
    pooled: &str,
    personal: &str,
    self_pay: &str,
    reductions: &str,
) -> InsuranceSplit {
    InsuranceSplit {
        settlement_id: settlement.into(),
        pooled: pooled.into(),
        personal_account: personal.into(),
        self_pay: self_pay.into(),
        reductions: reductions.into(),
    }
}

async fn post(
    client: &Client,
    id: &str,
    bill: &str,
    amount: &str,
    insurance: InsuranceSplit,
) -> Result<Bill, ApiError> {
    client
        .post_bill(PostBillRequest {
            request_id: id.into(),
            terminal_id: HIS.into(),
            bill_id: bill.into(),
            card_no: "HC0301".into(),
            kind: BillKind::Outpatient as i32,
            amount: amount.into(),
            insurance: Some(insurance),
        })
        .await
}

async fn balance(client: &Client) -> Money {
    let reply = client
        .query_balance(QueryBalanceRequest {
            card_no: "HC0301".into(),
            account_id: String::new(),
        })
        .await
        .unwrap();
    Money::parse(&reply.balance).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insured_bills_are_paid_by_their_self_pay_part_and_listed_for_the_insurance_bureau() {
    let dir = tempfile::tempdir().unwrap();
    let c = BankCluster::start(dir.path(), Money::from_yuan(1_000), &[KIOSK, HIS], T)
        .await
        .unwrap();
    let client = &c.client;
    client
        .issue_card(IssueCardRequest {
            request_id: "K-0301:1".into(),
            terminal_id: KIOSK.into(),
            card_no: "HC0301".into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "Insured Patient".into(),
            person_key: format!("{:064x}", 301),
            id_masked: "1101**********0301".into(),
            first_deposit: "100.00".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Bad splits: refused at the edge or by the ledger, nothing written.
    for (n, (what, amount, bad, expected)) in [
        (
            "a negative part",
            "",
            split("YB-1", "-1.00", "0", "6.00", "0"),
            "INVALID_AMOUNT",
        ),
        (
            "no self-pay part",
            "",
            split("YB-1", "100.00", "0", "0", "0"),
            "INVALID_AMOUNT",
        ),
        (
            "three places",
            "",
            split("YB-1", "1.005", "0", "6.00", "0"),
            "INVALID_AMOUNT",
        ),
        (
            "a bad settlement id",
            "",
            split("YB 1", "1", "0", "6.00", "0"),
            "INVALID_ID",
        ),
        (
            "an amount that is not the self-pay part",
            "7.00",
            split("YB-1", "80", "12", "6.00", "2"),
            "INVALID_AMOUNT",
        ),
        (
            "parts together too large",
            "",
            split("YB-1", "10000000", "0", "6.00", "0"),
            "INVALID_AMOUNT",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = post(client, &format!("H:bad:{n}"), "YB-BILL-1", amount, bad).await;
        assert_eq!(reason(refused), expected, "{what}");
    }
    assert_eq!(
        reason(
            client
                .get_bill(GetBillRequest {
                    bill_id: "YB-BILL-1".into()
                })
                .await
        ),
        "BILL_NOT_FOUND"
    );

    // Posted with its split; the amount is the self-pay part.
    let bill = post(
        client,
        "H:1",
        "YB-BILL-1",
        "6.00",
        split("YB-1", "80", "12", "6", "2"),
    )
    .await
    .unwrap();
    assert_eq!(bill.amount, "6.00");
    assert_eq!(
        bill.insurance,
        Some(split("YB-1", "80.00", "12.00", "6.00", "2.00"))
    );
    assert!(!bill.insurance_reversed);
    // One settlement, one bill.
    assert_eq!(
        reason(
            post(
                client,
                "H:2",
                "YB-BILL-2",
                "",
                split("YB-1", "1", "1", "1", "1")
            )
            .await
        ),
        "INSURANCE_SETTLEMENT_EXISTS"
    );
    let second = post(
        client,
        "H:3",
        "YB-BILL-2",
        "",
        split("YB-2", "10.50", "0", "4.50", "0"),
    )
    .await
    .unwrap();
    assert_eq!(second.amount, "4.50");

    // The patient pays the self-pay parts only.
    for (id, bill) in [("K-0301:2", "YB-BILL-1"), ("K-0301:3", "YB-BILL-2")] {
        client
            .pay_bill(PayBillRequest {
                request_id: id.into(),
                terminal_id: KIOSK.into(),
                bill_id: bill.into(),
                card_no: "HC0301".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(balance(client).await, Money::from_cents(10_000 - 600 - 450));

    // Cancelled whole only; the settlement is reversed and the self-pay part refunded.
    let part = client
        .cancel_bill(CancelBillRequest {
            request_id: "H:4".into(),
            terminal_id: HIS.into(),
            bill_id: "YB-BILL-1".into(),
            amount: "1.00".into(),
        })
        .await;
    assert_eq!(reason(part), "INSURED_BILL_WHOLE_ONLY");
    client
        .cancel_bill(CancelBillRequest {
            request_id: "H:5".into(),
            terminal_id: HIS.into(),
            bill_id: "YB-BILL-1".into(),
            amount: String::new(),
        })
        .await
        .unwrap();
    client
        .refund(RefundRequest {
            request_id: "K-0301:4".into(),
            terminal_id: KIOSK.into(),
            bill_id: "YB-BILL-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(balance(client).await, Money::from_cents(10_000 - 450));
    let reversed = client
        .get_bill(GetBillRequest {
            bill_id: "YB-BILL-1".into(),
        })
        .await
        .unwrap();
    assert!(reversed.insurance_reversed);

    // The day's list for 医保对账.
    let report = client
        .insurance_report(InsuranceReportRequest {
            date: today(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids =
        |lines: &[InsuredBillLine]| lines.iter().map(|l| l.bill_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&report.settled), ["YB-BILL-1", "YB-BILL-2"]);
    assert_eq!(ids(&report.reversed), ["YB-BILL-1"]);
    let settled = report.settled_total.clone().unwrap();
    assert_eq!(
        (
            settled.count,
            settled.pooled.as_str(),
            settled.personal_account.as_str()
        ),
        (2, "90.50", "12.00")
    );
    assert_eq!(
        (settled.self_pay.as_str(), settled.reductions.as_str()),
        ("10.50", "2.00")
    );
    let reversed_total = report.reversed_total.unwrap();
    assert_eq!(
        (reversed_total.count, reversed_total.self_pay.as_str()),
        (1, "6.00")
    );
    assert_eq!(report.settled[1].status, BillStatus::Paid as i32);
    assert!(report.reversed[0].reversed_at_ms > 0);
    assert_eq!(
        (report.settled_next.as_str(), report.reversed_next.as_str()),
        ("", "")
    );
    // In pages of one line: each page carries the day's totals and the next page's cursor.
    let page = |settled_after: &str| InsuranceReportRequest {
        date: today(),
        settled_after: settled_after.into(),
        limit: 1,
        ..Default::default()
    };
    let first = client.insurance_report(page("")).await.unwrap();
    assert_eq!(ids(&first.settled), ["YB-BILL-1"]);
    assert_eq!(first.settled_next, "YB-BILL-1");
    assert_eq!(first.settled_total, report.settled_total);
    let second = client
        .insurance_report(page(&first.settled_next))
        .await
        .unwrap();
    assert_eq!(ids(&second.settled), ["YB-BILL-2"]);
    assert_eq!(second.settled_next, "");
    for bad in [
        InsuranceReportRequest {
            date: "2026-13-01".into(),
            ..Default::default()
        },
        InsuranceReportRequest {
            date: today(),
            settled_after: "not a bill id".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(reason(client.insurance_report(bad).await), "INVALID_ID");
    }
    let too_many = InsuranceReportRequest {
        date: today(),
        limit: 5_001,
        ..Default::default()
    };
    assert_eq!(
        reason(client.insurance_report(too_many).await),
        "INVALID_REQUEST"
    );

    // Finance staff read the same list, and the rules, with `yinyi ctl`; an admin sets them.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(yinyi_tests::harness::yinyi_exe().unwrap())
            .args(["ctl", "--node", &c.cluster.addr(1), "--certs"])
            .arg(c.cluster.tls_dir())
            .args(["--credential", c.cluster.credential()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = ctl(&["insurance-report", "--date", &today()]);
    assert!(
        listed.contains("settled: 2 bills; pooled (统筹) 90.50"),
        "{listed}"
    );
    assert!(listed.contains("reversed   YB-1"), "{listed}");
    assert!(ctl(&["rules"]).contains("single-transaction limit 50000.00"));
    let set = ctl(&[
        "rules",
        "--single-txn-limit",
        "60000.00",
        "--min-first-deposit",
        "10.00",
        "--max-overdraft",
        "1000.00",
    ]);
    assert!(
        set.contains("limit 60000.00") && set.contains("set by an admin"),
        "{set}"
    );
}
