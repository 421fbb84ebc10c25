//! Inpatients (issue 18, part 1) through the API of a real 3-node cluster with the bank
//! simulator: an admission, deposits in cash, from a relative's account and by bank card, the
//! daily charges and the reminder list, the ward report, a shortfall, and a discharge whose
//! online refunds are under way when the leader is killed: the new leader finishes each one
//! once, and the money is where it should be to the fen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_ledger::{BankRef, CardToken, Money};
use yinyi_tests::bank_cluster::{BankCluster, reason, today};

const T: Duration = Duration::from_secs(30);
const KIOSK: &str = "K-0201";
const WINDOW: &str = "W-02";
const HIS: &str = "H-HIS";
const CASHIER: &str = "CASHIER2";
const TOKENS: [&str; 2] = ["tok_inpatient_01", "tok_inpatient_02"];

static SERIAL: AtomicU64 = AtomicU64::new(0);

fn rid(terminal: &str) -> String {
    format!("{terminal}:{:06}", SERIAL.fetch_add(1, Ordering::Relaxed))
}

fn money(text: &str) -> Money {
    Money::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

struct Ward {
    client: Client,
}

impl Ward {
    async fn patient(&self, card: &str, person: u64, deposit: &str) {
        self.client
            .issue_card(IssueCardRequest {
                request_id: rid(KIOSK),
                terminal_id: KIOSK.into(),
                card_no: card.into(),
                card_kind: CardKind::Hospital as i32,
                holder_name: format!("Inpatient {person}"),
                person_key: format!("{:064x}", 7_000 + person),
                id_masked: "1101**********0011".into(),
                first_deposit: deposit.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn balance(&self, card: &str) -> Money {
        let reply = self
            .client
            .query_balance(QueryBalanceRequest {
                card_no: card.into(),
                account_id: String::new(),
            })
            .await
            .unwrap();
        money(&reply.balance)
    }

    async fn episode(&self, id: &str) -> Episode {
        self.client
            .get_episode(GetEpisodeRequest {
                admission_id: id.into(),
            })
            .await
            .unwrap()
    }

    async fn admit(&self, id: &str, card: &str, ward: &str) -> Result<Episode, ApiError> {
        self.client
            .open_episode(OpenEpisodeRequest {
                request_id: rid(HIS),
                terminal_id: HIS.into(),
                admission_id: id.into(),
                card_no: card.into(),
                ward_id: ward.into(),
                reminder_below: "1000.00".into(),
            })
            .await
    }

    fn deposit_request(
        at: &str,
        id: &str,
        amount: &str,
        from: episode_deposit_request::From,
    ) -> EpisodeDepositRequest {
        EpisodeDepositRequest {
            request_id: rid(at),
            terminal_id: at.into(),
            operator_id: if at == WINDOW {
                CASHIER.into()
            } else {
                String::new()
            },
            admission_id: id.into(),
            amount: amount.into(),
            from: Some(from),
        }
    }

    async fn deposit(
        &self,
        at: &str,
        id: &str,
        amount: &str,
        from: episode_deposit_request::From,
    ) -> Result<EpisodeReply, ApiError> {
        self.client
            .deposit(Self::deposit_request(at, id, amount, from))
            .await
    }

    /// A deposit by bank card, asked again (the same request id) until the bank answered.
    async fn deposit_by_card(&self, id: &str, card: &str, token: &str, amount: &str) {
        let request = Self::deposit_request(
            KIOSK,
            id,
            amount,
            episode_deposit_request::From::Card(CardPayment {
                card_no: card.into(),
                bank_card_token: token.into(),
                bank_card_masked: "6222****0099".into(),
            }),
        );
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let reply = self.client.deposit(request.clone()).await.unwrap();
            if reply.bank_state == "COMPLETED" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {reply:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn charge(&self, id: &str, amount: &str) -> Result<Episode, ApiError> {
        self.client
            .post_charges(EpisodeChargesRequest {
                request_id: rid(HIS),
                terminal_id: HIS.into(),
                admission_id: id.into(),
                amount: amount.into(),
            })
            .await
    }

    async fn finalize(&self, id: &str, amount: &str) -> Episode {
        self.client
            .finalize(FinalizeEpisodeRequest {
                request_id: rid(HIS),
                terminal_id: HIS.into(),
                admission_id: id.into(),
                final_amount: amount.into(),
            })
            .await
            .unwrap()
    }

    fn settle_request(
        id: &str,
        card: &str,
        rest_to: RefundDestination,
        from_account: bool,
    ) -> SettleEpisodeRequest {
        SettleEpisodeRequest {
            request_id: rid(WINDOW),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
            admission_id: id.into(),
            rest_to: rest_to as i32,
            shortfall_from_account: from_account,
            card_no: card.into(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inpatient_stay_from_admission_to_a_discharge_whose_leader_dies_mid_refund() {
    let dir = tempfile::tempdir().unwrap();
    let started = BankCluster::start(
        dir.path(),
        Money::from_yuan(50_000),
        &[KIOSK, WINDOW, HIS],
        T,
    )
    .await
    .unwrap();
    started
        .open_shift(rid(WINDOW), WINDOW, CASHIER)
        .await
        .unwrap();
    let (sim, mut cluster) = (started.sim, started.cluster);
    let ward = Ward {
        client: started.client,
    };

    // ---- admission and deposits by every way ----
    ward.patient("IP0001", 1, "300.00").await;
    ward.patient("IP0002", 2, "5000.00").await; // a relative
    let opened = ward.admit("ZY-0001", "IP0001", "W5").await.unwrap();
    assert_eq!(
        (opened.status.as_str(), opened.held.as_str()),
        ("OPEN", "0.00")
    );
    assert_eq!(
        reason(ward.admit("ZY-0001", "IP0002", "W5").await),
        "EPISODE_EXISTS"
    );
    use episode_deposit_request::From;
    ward.deposit(WINDOW, "ZY-0001", "2000.00", From::Cash(true))
        .await
        .unwrap();
    assert_eq!(
        reason(
            ward.deposit(
                KIOSK,
                "ZY-0001",
                "3000.00",
                From::PayerCardNo("IP0002".into())
            )
            .await
        ),
        "TERMINAL_NOT_ALLOWED",
        "a relative's account pays in only at a window"
    );
    let relative = ward
        .deposit(
            WINDOW,
            "ZY-0001",
            "3000.00",
            From::PayerCardNo("IP0002".into()),
        )
        .await
        .unwrap();
    assert_eq!(relative.payer_balance, "2000.00");
    assert_eq!(
        reason(
            ward.deposit(
                WINDOW,
                "ZY-0001",
                "9000.00",
                From::PayerCardNo("IP0002".into())
            )
            .await
        ),
        "INSUFFICIENT_FUNDS"
    );
    let tokens: Vec<CardToken> = TOKENS
        .iter()
        .map(|t| CardToken::parse(t).unwrap())
        .collect();
    let at_bank: Vec<Money> = tokens.iter().map(|t| sim.balance(t)).collect();
    ward.deposit_by_card("ZY-0001", "IP0001", TOKENS[0], "1500.00")
        .await;
    ward.deposit_by_card("ZY-0001", "IP0001", TOKENS[1], "2500.00")
        .await;
    assert_eq!(
        sim.balance(&tokens[0]),
        at_bank[0].checked_sub(money("1500.00")).unwrap()
    );
    let ep = ward.episode("ZY-0001").await;
    assert_eq!((ep.deposited.as_str(), ep.deposits.len()), ("9000.00", 4));
    assert_eq!(
        ward.balance("IP0001").await,
        money("300.00"),
        "the account is untouched"
    );

    // ---- daily charges, the reminder list, the ward report ----
    for _ in 0..3 {
        ward.charge("ZY-0001", "2800.00").await.unwrap();
    }
    let ep = ward.episode("ZY-0001").await;
    assert_eq!((ep.unused.as_str(), ep.needs_reminder), ("600.00", true));
    let reminders = ward
        .client
        .reminder_list(WardRequest {
            ward_id: "W5".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        reminders
            .episodes
            .iter()
            .map(|e| e.admission_id.as_str())
            .collect::<Vec<_>>(),
        vec!["ZY-0001"]
    );
    ward.patient("IP0003", 3, "100.00").await;
    ward.admit("ZY-0002", "IP0003", "W6").await.unwrap();
    ward.deposit(WINDOW, "ZY-0002", "800.00", From::Cash(true))
        .await
        .unwrap();
    let report = ward
        .client
        .ward_report(WardRequest::default())
        .await
        .unwrap();
    assert_eq!(report.deposited, "9800.00", "{report:?}");
    assert_eq!(report.wards.len(), 2, "{report:?}");
    assert_eq!(report.wards[0].ward_id, "W5");
    assert_eq!(report.wards[0].on_reminder_list, 1);

    // ---- a shortfall: refused until asked to take it from the account ----
    ward.finalize("ZY-0002", "850.00").await;
    assert_eq!(
        reason(ward.charge("ZY-0002", "1.00").await),
        "EPISODE_NOT_OPEN"
    );
    assert_eq!(
        reason(
            ward.client
                .settle(Ward::settle_request(
                    "ZY-0002",
                    "IP0003",
                    RefundDestination::Cash,
                    false
                ))
                .await
        ),
        "EPISODE_SHORTFALL"
    );
    let settled = ward
        .client
        .settle(Ward::settle_request(
            "ZY-0002",
            "IP0003",
            RefundDestination::Cash,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(
        (
            settled.collected.as_str(),
            settled.rest.as_str(),
            settled.balance.as_str()
        ),
        ("50.00", "0.00", "50.00")
    );

    // ---- the discharge: 9,000 deposited, 7,900 final: 1,100 back to the first card ----
    // Every bank answer now takes 2 s; the leader is killed while the refund is at the bank.
    ward.finalize("ZY-0001", "7900.00").await;
    sim.set_faults("latency=2000ms").unwrap();
    let seen = sim.requests_seen();
    let request = Ward::settle_request("ZY-0001", "IP0001", RefundDestination::Cash, false);
    let call = {
        let client = ward.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.settle(request).await })
    };
    let deadline = tokio::time::Instant::now() + T;
    while sim.requests_seen() == seen {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refund never reached the bank"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster.wait_for_leader(T).await.unwrap();
    cluster.kill(leader).unwrap();
    cluster.wait_for_leader(T).await.unwrap();
    sim.set_faults("clear").unwrap();
    let _ = call.await;
    // The same settlement asked again: answered from its record; its refund finishes once.
    let deadline = tokio::time::Instant::now() + T;
    let reply = loop {
        let reply = ward.client.settle(request.clone()).await.unwrap();
        if reply
            .online
            .iter()
            .all(|r| matches!(r.state.as_str(), "COMPLETED" | "DECLINED" | "REVERSED"))
        {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.online.len(), 1, "{reply:?}");
    let refund = &reply.online[0];
    assert_eq!(refund.amount, "1100.00");
    assert_eq!(reply.rest, "0.00");
    let refund_ref = BankRef::parse(&refund.bank_ref).unwrap();
    assert!(sim.requests_for(&refund_ref) >= 1);
    // Exactly once: either the card has it back, or (a reversal) the account does.
    let card_back = sim
        .balance(&tokens[0])
        .checked_sub(at_bank[0].checked_sub(money("1500.00")).unwrap())
        .unwrap();
    let account_back = ward
        .balance("IP0001")
        .await
        .checked_sub(money("300.00"))
        .unwrap();
    match refund.state.as_str() {
        "COMPLETED" => assert_eq!((card_back, account_back), (money("1100.00"), Money::ZERO)),
        _ => assert_eq!((card_back, account_back), (Money::ZERO, money("1100.00"))),
    }
    assert_eq!(
        sim.balance(&tokens[1]),
        at_bank[1].checked_sub(money("2500.00")).unwrap(),
        "the second card is not refunded: the first took all the surplus"
    );
    let ep = ward.episode("ZY-0001").await;
    assert_eq!(
        (ep.status.as_str(), ep.held.as_str(), ep.refunded.as_str()),
        ("DISCHARGED", "0.00", "1100.00")
    );

    // ---- the day's discharges, the reports and the audit ----
    let discharges = ward
        .client
        .discharges(DischargesRequest { date: today() })
        .await
        .unwrap();
    let mut ids: Vec<&str> = discharges
        .episodes
        .iter()
        .map(|e| e.admission_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["ZY-0001", "ZY-0002"]);
    let open = ward
        .client
        .ward_report(WardRequest::default())
        .await
        .unwrap();
    assert!(open.wards.is_empty(), "{open:?}");
    let report = ward
        .client
        .close_shift(ShiftRequest {
            request_id: rid(WINDOW),
            terminal_id: WINDOW.into(),
            operator_id: CASHIER.into(),
        })
        .await
        .unwrap();
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.kind == "EPISODE_DEPOSIT" && l.total == "2800.00"),
        "{report:?}"
    );
    assert_eq!(report.cash_expected, "2800.00", "{report:?}");
    let audit = ward
        .client
        .audit_balances(AuditRequest { with_digest: false })
        .await
        .unwrap();
    assert!(audit.ok, "{audit:?}");
    assert_eq!(audit.unresolved_bank_ops, 0, "{audit:?}");
    // Both episodes audited; discharged and refunded, they hold nothing.
    assert_eq!(
        (audit.episodes, audit.episodes_held.as_str()),
        (2, "0.00"),
        "{audit:?}"
    );
}
