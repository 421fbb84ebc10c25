//! Issue 16, least privilege, through a real 3-node TLS cluster: the internal service (Raft,
//! proposals, membership, snapshots, elections) answers only the member nodes named in their
//! certificates — not the operators' `admin.pem`, not a removed member, not another CA's
//! node — and operators do what they did through it (a snapshot, a hand-over) through the
//! public API with a credential, in the audit trail.

use std::time::Duration;

use tonic::Code;
use tonic::transport::ClientTlsConfig;
use yinyi_api::Client;
use yinyi_api::v1::*;
use yinyi_consensus::pb::{Empty, Payload, StatusRequest};
use yinyi_node::local::LocalCluster;
use yinyi_tests::harness::yinyi_exe;

const T: Duration = Duration::from_secs(30);
/// A cluster is three processes on a small machine: one test at a time.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Creates a credential through the API and returns a client that uses it, once every node
/// knows it (a follower that has not applied it yet refuses it as unknown).
/// The audit trail from the beginning (up to 1,000 records).
async fn audit_trail(admin: &Client) -> Vec<AuditRecord> {
    admin
        .list_audit(ListAuditRequest {
            since_ms: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .records
}

async fn credential(c: &LocalCluster, admin: &Client, id: &str, roles: &[&str]) -> Client {
    let secret = yinyi_api::credential::new_secret();
    admin
        .put_credential(PutCredentialRequest {
            request_id: format!("cred-{id}"),
            terminal_id: "A-ADMIN".into(),
            operator_id: "sec".into(),
            credential_id: id.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            bound_terminal_id: String::new(),
            secret_sha256: yinyi_api::credential::secret_sha256(&secret),
        })
        .await
        .unwrap();
    c.wait_applied_everywhere(T).await.unwrap();
    admin.with_credential(&format!("{id}:{secret}")).unwrap()
}

/// Every internal call that changes something, each with an undecodable payload: the caller is
/// refused before its payload is read. `Ok(())` when the call got past the caller check.
/// `TriggerElect` only when `elect` (from a member it really starts an election).
async fn internal_calls(
    addr: &str,
    tls: &ClientTlsConfig,
    elect: bool,
) -> Vec<(&'static str, Result<(), Code>)> {
    let mut client = yinyi_consensus::network::connect_lazy(addr, Some(tls)).unwrap();
    let junk = || Payload {
        data: vec![0xff, 0x00],
    };
    let code = |r: Result<tonic::Response<Payload>, tonic::Status>| match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::InvalidArgument => Ok(()),
        Err(s) => Err(s.code()),
    };
    let mut answers = vec![
        ("AppendEntries", code(client.append_entries(junk()).await)),
        ("Vote", code(client.vote(junk()).await)),
        (
            "InstallSnapshot",
            code(client.install_snapshot(junk()).await),
        ),
        ("Propose", code(client.propose(junk()).await)),
        (
            "ChangeMembership",
            code(client.change_membership(junk()).await),
        ),
        (
            "TriggerSnapshot",
            code(client.trigger_snapshot(Empty {}).await),
        ),
    ];
    if elect {
        answers.push(("TriggerElect", code(client.trigger_elect(Empty {}).await)));
    }
    answers
}

async fn status_ok(addr: &str, tls: &ClientTlsConfig) -> bool {
    let mut client = yinyi_consensus::network::connect_lazy(addr, Some(tls)).unwrap();
    client
        .status(StatusRequest { with_digest: false })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_member_nodes_speak_raft_and_operators_act_through_the_api() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    let leader = c.wait_for_leader(T).await.unwrap();
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    let mut config = c.api_config();
    config.deadline = T;
    let admin = Client::new(config).unwrap();

    // The operators' certificate: status only.
    let operator = c.client_tls();
    for (call, answer) in internal_calls(&c.addr(leader), &operator, true).await {
        assert_eq!(
            answer,
            Err(Code::PermissionDenied),
            "admin.pem reached {call} on the leader"
        );
    }
    assert!(status_ok(&c.addr(leader), &operator).await);

    // A member node's certificate passes the check (its junk payload is then refused as
    // such). TriggerElect is left out: it would really start an election.
    for (call, answer) in internal_calls(&c.addr(follower), &c.node_tls(leader), false).await {
        assert_eq!(answer, Ok(()), "a member node was refused {call}");
    }

    // Another CA's node certificate, named like a member: refused at the handshake.
    let foreign = dir.path().join("foreign");
    yinyi_node::certs::make(&foreign, &["node2".into()], &[], &[]).unwrap();
    let foreign_tls = yinyi_api::TlsFiles::in_dir(&foreign, Some("node2"))
        .client()
        .unwrap();
    for (call, answer) in internal_calls(&c.addr(leader), &foreign_tls, true).await {
        assert!(answer.is_err(), "another CA's node reached {call}");
    }

    // The operators' snapshot and hand-over, through the public API with a credential.
    let on_follower = {
        let mut config = c.api_config();
        config.nodes = vec![c.addr(follower)];
        config.deadline = T;
        Client::new(config).unwrap()
    };
    let snapshot = on_follower
        .trigger_snapshot(NodeActionRequest {})
        .await
        .unwrap();
    assert_eq!(snapshot.node, follower);
    let moved = on_follower
        .transfer_leader(NodeActionRequest {})
        .await
        .unwrap();
    assert_eq!(
        (moved.node, moved.leader),
        (follower, follower),
        "the follower asked did not take over"
    );
    let new_leader = c.wait_for_leader(T).await.unwrap();
    assert_eq!(new_leader, follower);
    // A kiosk credential cannot.
    let kiosk = credential(&c, &admin, "kiosk", &["kiosk"]).await;
    let e = kiosk
        .trigger_snapshot(NodeActionRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{e}");

    // A removed member's certificate: refused from the moment it is removed.
    let removed = c
        .running()
        .into_iter()
        .find(|&id| id != new_leader)
        .unwrap();
    admin
        .remove_nodes(NodeIds { ids: vec![removed] })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let answers = internal_calls(&c.addr(new_leader), &c.node_tls(removed), true).await;
        if answers
            .iter()
            .all(|(_, answer)| *answer == Err(Code::PermissionDenied))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "removed node {removed} still reaches the leader: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both operations are in the audit trail, with the credential.
    let trail = audit_trail(&admin).await;
    for what in [
        format!("snapshot on node {follower} by credential local"),
        format!("transfer-leader to node {follower} by credential local"),
    ] {
        assert!(
            trail.iter().any(|r| r.details.contains(&what)),
            "no {what:?} in {trail:#?}"
        );
    }
}

/// Issue 16, point 2: account ids are sequential, so a channel that could read by id could walk
/// every patient's name, masked ID, balance and history. Kiosks and mobile channels read by the
/// card presented; staff roles may read by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosks_and_mobile_channels_read_only_by_the_card_presented() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(&yinyi_exe().unwrap(), dir.path(), 3, vec![]).unwrap();
    c.wait_for_leader(T).await.unwrap();
    let mut config = c.api_config();
    config.deadline = T;
    let admin = Client::new(config).unwrap();
    admin
        .register_terminal(RegisterTerminalRequest {
            request_id: "reg".into(),
            terminal_id: "A-ADMIN".into(),
            operator_id: "admin".into(),
            new_terminal_id: "K-0101".into(),
        })
        .await
        .unwrap();
    let issued = admin
        .issue_card(IssueCardRequest {
            request_id: "issue".into(),
            terminal_id: "K-0101".into(),
            card_no: "HC00000001".into(),
            card_kind: CardKind::Hospital as i32,
            holder_name: "patient".into(),
            person_key: format!("{:064x}", 1),
            id_masked: "110***********0001".into(),
            first_deposit: "100".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let by_card = QueryBalanceRequest {
        card_no: "HC00000001".into(),
        account_id: String::new(),
    };
    let by_id = |id: &str| QueryBalanceRequest {
        card_no: String::new(),
        account_id: id.into(),
    };
    for role in ["kiosk", "mobile"] {
        let channel = credential(&c, &admin, role, &[role]).await;
        assert_eq!(
            channel
                .query_balance(by_card.clone())
                .await
                .unwrap()
                .balance,
            "100.00"
        );
        // The account's own id, and a walk over the ids around it: nothing revealed.
        let first: u64 = issued.account_id.parse().unwrap();
        for id in std::iter::once(first).chain(1..=20) {
            match channel.query_balance(by_id(&id.to_string())).await {
                Err(yinyi_api::ApiError::Refused { code, reason, .. }) => assert_eq!(
                    (code, reason.as_str()),
                    (Code::PermissionDenied, "READ_BY_CARD_ONLY"),
                    "{role} reading account {id}"
                ),
                other => panic!("{role} read account {id} by id: {other:?}"),
            }
        }
        let history = channel
            .list_transactions(ListTransactionsRequest {
                account_id: issued.account_id.clone(),
                ..Default::default()
            })
            .await;
        assert!(
            matches!(&history, Err(e) if e.code() == Some(Code::PermissionDenied)),
            "{role} listed by id: {history:?}"
        );
    }
    for role in ["window", "auditor"] {
        let staff = credential(&c, &admin, role, &[role]).await;
        let reply = staff
            .query_balance(by_id(&issued.account_id))
            .await
            .unwrap();
        assert_eq!(reply.balance, "100.00", "{role}");
    }
    // Each read by id is in the audit trail: who (the credential), which account, which method.
    let trail = audit_trail(&admin).await;
    for role in ["window", "auditor"] {
        assert!(
            trail.iter().any(|r| r.action == "RECORD_ACCESS"
                && r.terminal_id == "S-READS"
                && r.details.contains(&format!("reader: \"{role}\""))
                && r.details.contains("QueryBalance")
                && r.outcome == "OK"),
            "no audit record of {role}'s read by id in {trail:?}"
        );
    }
}
