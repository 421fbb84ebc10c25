//! Security through a real 3-node TLS cluster: every method of the API against a credential of
//! every role (refused exactly when the role may not call it); terminal binding; unknown,
//! wrong and revoked credentials refused and counted; credential and membership changes in the
//! audit trail; plaintext and foreign-CA clients kept out; the internal service refusing a
//! caller without a CA certificate; a node with a foreign certificate unable to join.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use yinyi_api::v1::*;
use yinyi_api::{ApiError, Client};
use yinyi_node::api::auth::roles_for;
use yinyi_node::local::{LocalCluster, free_port};
use yinyi_tests::harness::yinyi_exe;
use yinyi_tests::nemesis::wait_until;
use yinyi_tests::raw;

const T: Duration = Duration::from_secs(30);

fn channel(c: &LocalCluster, addr: &str) -> Channel {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(c.client_tls())
        .unwrap()
        .connect_lazy()
}

/// Creates a credential through the API and returns `ID:SECRET`.
async fn credential(admin: &Client, id: &str, roles: &[&str], terminal: &str) -> String {
    let secret = yinyi_api::credential::new_secret();
    admin
        .put_credential(PutCredentialRequest {
            request_id: format!("cred-{id}"),
            terminal_id: "A-ADMIN".into(),
            operator_id: "SEC".into(),
            credential_id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            bound_terminal_id: terminal.into(),
            secret_sha256: yinyi_api::credential::secret_sha256(&secret),
        })
        .await
        .unwrap();
    format!("{id}:{secret}")
}

/// The node's Prometheus text (a bare HTTP/1.0 GET).
async fn scrape(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

fn counter(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_credentials_and_certificates_keep_callers_to_their_part() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::prepare(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    let metrics: Vec<String> = (1..=3)
        .map(|_| format!("127.0.0.1:{}", free_port().unwrap()))
        .collect();
    for id in 1..=3u64 {
        c.set_node_args(
            id,
            vec!["--metrics-listen".into(), metrics[id as usize - 1].clone()],
        );
        c.spawn(id).unwrap();
    }
    let leader = c.wait_for_leader(T).await.unwrap();
    let mut config = c.api_config();
    config.deadline = T;
    let admin = Client::new(config).unwrap();
    for terminal in ["K-0101", "K-0102", "W-0101", "H-HIS"] {
        admin
            .register_terminal(RegisterTerminalRequest {
                request_id: format!("reg-{terminal}"),
                terminal_id: "A-ADMIN".into(),
                operator_id: "SEC".into(),
                new_terminal_id: terminal.into(),
            })
            .await
            .unwrap();
    }

    // Every method, against a credential of each single role: refused with PERMISSION_DENIED
    // exactly when the role may not call it; otherwise whatever the (empty) request earns.
    let mut roles = Vec::new();
    for role in yinyi_ledger::Role::ALL {
        let cred = credential(&admin, &format!("only-{role}"), &[role.as_str()], "").await;
        roles.push((role, cred));
    }
    let leader_channel = channel(&c, &c.addr(leader));
    let methods = raw::api_methods();
    assert!(methods.len() >= 40, "{methods:?}");
    let mut allowed = 0;
    for method in &methods {
        let (service, name) = method
            .trim_start_matches("/yinyi.v1.")
            .split_once('/')
            .unwrap();
        let may = roles_for(service, name).unwrap_or_else(|| panic!("{method} has no roles"));
        for (role, cred) in &roles {
            let answer = raw::call(leader_channel.clone(), Some(cred), method, Vec::new()).await;
            // Every refusal carries its reason in an ErrorInfo (issue 22, point 2).
            let refused = matches!(&answer, Err(s) if s.code() == Code::PermissionDenied
                && s.message().contains("may not call")
                && yinyi_api::error::reason_of(s).as_deref() == Some("ROLE_NOT_ALLOWED"));
            assert_eq!(
                refused,
                !may.contains(role),
                "{method} as {role}: {answer:?}"
            );
            if !refused {
                allowed += 1;
                assert!(
                    !matches!(&answer, Err(s) if s.code() == Code::Unauthenticated),
                    "{method} as {role}: {answer:?}"
                );
            }
        }
    }
    assert!(allowed > 50, "{allowed}");

    // What the issue names: a kiosk cannot withdraw cash, HIS cannot pay, only admin changes
    // membership — through the typed client, with the reasons people read.
    let kiosk = admin
        .with_credential(&credential(&admin, "kiosk-0101", &["kiosk"], "K-0101").await)
        .unwrap();
    let his = admin.with_credential(&roles[3].1).unwrap();
    assert_eq!(roles[3].0, yinyi_ledger::Role::His);
    let person = format!("{:064x}", 7);
    kiosk
        .issue_card(IssueCardRequest {
            request_id: "k-issue".into(),
            terminal_id: "K-0101".into(),
            card_no: "HC00000077".into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "Li".into(),
            person_key: person.clone(),
            id_masked: "1101**********0011".into(),
            first_deposit: "100".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = kiosk
        .withdraw(WithdrawRequest {
            request_id: "k-withdraw".into(),
            terminal_id: "K-0101".into(),
            card_no: "HC00000077".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    // Bound to K-0101: naming another kiosk is refused.
    let e = kiosk
        .deposit_cash(DepositCashRequest {
            request_id: "k-other".into(),
            terminal_id: "K-0102".into(),
            card_no: "HC00000077".into(),
            amount: "50".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("acts for terminal K-0101"), "{e}");
    let bill = his
        .post_bill(PostBillRequest {
            request_id: "h-bill".into(),
            terminal_id: "H-HIS".into(),
            bill_id: "B77".into(),
            card_no: "HC00000077".into(),
            kind: BillKind::Outpatient as i32,
            amount: "10".into(),
            insurance: None,
        })
        .await
        .unwrap();
    let e = his
        .pay_bill(PayBillRequest {
            request_id: "h-pay".into(),
            terminal_id: "H-HIS".into(),
            bill_id: bill.bill_id.clone(),
            card_no: "HC00000077".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    let e = kiosk
        .remove_nodes(NodeIds { ids: vec![3] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");
    kiosk
        .pay_bill(PayBillRequest {
            request_id: "k-pay".into(),
            terminal_id: "K-0101".into(),
            bill_id: bill.bill_id.clone(),
            card_no: "HC00000077".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Unknown, wrong and missing credentials; then revoked, on every node.
    let refusals_before: u64 = {
        let mut n = 0;
        for m in &metrics {
            n += counter(&scrape(m).await, "auth_refusals_total", "");
        }
        n
    };
    let unauthenticated = |r: Result<BalanceReply, ApiError>| matches!(r, Err(ref e) if e.code() == Some(Code::Unauthenticated) && e.reason() == Some("CREDENTIAL_UNKNOWN"));
    let query = QueryBalanceRequest {
        card_no: "HC00000077".into(),
        ..Default::default()
    };
    let stranger = admin.with_credential("nobody:0000").unwrap();
    assert!(unauthenticated(stranger.query_balance(query.clone()).await));
    let wrong = admin.with_credential("kiosk-0101:not-the-secret").unwrap();
    assert!(unauthenticated(wrong.query_balance(query.clone()).await));
    let answer = raw::call(
        leader_channel.clone(),
        None,
        "/yinyi.v1.PaymentService/QueryBalance",
        Vec::new(),
    )
    .await;
    assert!(
        matches!(&answer, Err(s) if s.code() == Code::Unauthenticated
            && yinyi_api::error::reason_of(s).as_deref() == Some("CREDENTIAL_MISSING")),
        "{answer:?}"
    );
    kiosk.query_balance(query.clone()).await.unwrap();
    admin
        .revoke_credential(RevokeCredentialRequest {
            request_id: "revoke-kiosk".into(),
            terminal_id: "A-ADMIN".into(),
            operator_id: "SEC".into(),
            credential_id: "kiosk-0101".into(),
        })
        .await
        .unwrap();
    for id in 1..=3u64 {
        let mut one = kiosk.config().clone();
        one.nodes = vec![c.addr(id)];
        one.deadline = Duration::from_secs(2);
        let one = Client::new(one).unwrap();
        wait_until(T, || {
            let (one, query) = (one.clone(), query.clone());
            async move {
                matches!(one.query_balance(query).await,
                    Err(ref e) if e.to_string().contains("revoked")
                        && e.reason() == Some("CREDENTIAL_REVOKED"))
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node {id} still accepts a revoked credential"));
    }
    let mut refusals_after = 0;
    for m in &metrics {
        let text = scrape(m).await;
        refusals_after += counter(&text, "auth_refusals_total", "");
    }
    assert!(
        refusals_after >= refusals_before + 6,
        "{refusals_before} → {refusals_after}"
    );

    // Plaintext and foreign-CA clients do not get in; neither does a TLS caller without a
    // certificate of the CA on the internal (Raft) service.
    let plain = Endpoint::from_shared(format!("http://{}", c.addr(leader)))
        .unwrap()
        .connect_lazy();
    assert!(
        raw::call(
            plain,
            Some(c.credential()),
            "/yinyi.v1.AdminService/ClusterStatus",
            vec![]
        )
        .await
        .is_err()
    );
    let foreign = dir.path().join("foreign");
    yinyi_node::certs::make(&foreign, &["node4".into()], &["admin".into()], &[]).unwrap();
    let foreign_tls = yinyi_api::TlsFiles::in_dir(&foreign, Some("admin"))
        .client()
        .unwrap();
    let foreign_channel = Endpoint::from_shared(format!("https://{}", c.addr(leader)))
        .unwrap()
        .tls_config(foreign_tls.clone())
        .unwrap()
        .connect_lazy();
    let answer = raw::call(
        foreign_channel,
        Some(c.credential()),
        "/yinyi.v1.AdminService/ClusterStatus",
        vec![],
    )
    .await;
    assert!(answer.is_err(), "a foreign CA's client got in: {answer:?}");
    // Trusting the site CA but showing no certificate: the API serves, the internal service
    // does not.
    let anonymous_tls = yinyi_api::TlsFiles::in_dir(c.tls_dir(), None)
        .client()
        .unwrap();
    let mut internal =
        yinyi_consensus::network::connect_lazy(&c.addr(leader), Some(&anonymous_tls)).unwrap();
    let e = internal
        .status(yinyi_consensus::pb::StatusRequest { with_digest: false })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let mut internal =
        yinyi_consensus::network::connect_lazy(&c.addr(leader), Some(&c.client_tls())).unwrap();
    internal
        .status(yinyi_consensus::pb::StatusRequest { with_digest: false })
        .await
        .unwrap();

    // A node with a foreign CA's certificate cannot join: the leader does not trust it, so it
    // never receives an entry, and the attempt is in the audit trail.
    let rogue_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let rogue_data = dir.path().join("rogue");
    let mut rogue = Command::new(yinyi_exe().unwrap())
        .args(["start", "--id", "4", "--join", "--listen", &rogue_addr])
        .arg("--data")
        .arg(&rogue_data)
        .args(["--peers", &format!("4={rogue_addr}")])
        .arg("--tls-ca")
        .arg(foreign.join("ca.pem"))
        .arg("--tls-cert")
        .arg(foreign.join("node4.pem"))
        .arg("--tls-key")
        .arg(foreign.join("node4-key.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut short = c.api_config();
    short.deadline = Duration::from_secs(4);
    short.attempt_timeout = Duration::from_secs(4);
    let joined = Client::new(short)
        .unwrap()
        .add_learner(AddLearnerRequest {
            id: 4,
            addr: rogue_addr.clone(),
        })
        .await;
    assert!(joined.is_err(), "a node with a foreign certificate joined");
    let status =
        yinyi_node::client::ClusterClient::new(vec![rogue_addr.clone()], Some(foreign_tls))
            .status(&rogue_addr)
            .await
            .unwrap();
    assert!(status.applied.unwrap_or(0) == 0, "{status:?}");
    let _ = rogue.kill();
    let _ = rogue.wait();
    admin.remove_nodes(NodeIds { ids: vec![4] }).await.unwrap();

    // The audit trail has the credential changes and the membership change, with who.
    let trail = admin
        .list_audit(ListAuditRequest {
            since_ms: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .records;
    let actions: Vec<&str> = trail.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"PUT_CREDENTIAL"), "{actions:?}");
    assert!(actions.contains(&"REVOKE_CREDENTIAL"), "{actions:?}");
    assert!(
        trail
            .iter()
            .any(|r| r.action == "RECORD_MEMBERSHIP" && r.details.contains("by credential local")),
        "{trail:?}"
    );
    assert!(Path::new(&c.tls_dir().join("ca.pem")).exists());
}
