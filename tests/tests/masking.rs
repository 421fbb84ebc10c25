//! Patients' ID numbers and bank card numbers never reach the cluster in full: terminals send a
//! keyed hash of the ID number with a masked form, and a bank card as the bank's token with a
//! masked form. After a patient's card, deposit, bank-card top-up, loss and replacement, neither
//! full number appears in any file of any node (RocksDB tables, WAL, manifest, snapshots) or in
//! any node's log, while the masked forms do (so the scan reads what was written). The
//! holder's name and phone are sealed with the site's data key: they are nowhere on disk
//! either, and a balance query shows the name.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use yinyi_api::Client;
use yinyi_api::v1::*;
use yinyi_tests::harness::Chaos;

const ID_NUMBER: &str = "110101199003074512";
const ID_MASKED: &str = "110101********4512";
const BANK_CARD: &str = "6222021234567890123";
const CARD_MASKED: &str = "6222****0123";
const HOLDER_NAME: &str = "Zhang Sanfeng of ward 7";
const HOLDER_PHONE: &str = "139****7788";
/// The bulk patients' names and phones start so (and nothing else on disk does).
const BULK_NAME: &str = "Bulk-Holder-";
const BULK_PHONE: &str = "137****";

/// The hospital's keyed hash of an ID number (the key stays in the terminals' configuration).
fn person_key(id_number: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"site-key-of-the-test-hospital:");
    hasher.update(id_number.as_bytes());
    hex::encode(hasher.finalize())
}

/// Every file under `dir`, read whole, searched for `needle`.
fn found_in(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_id_and_card_numbers_are_nowhere_on_disk_or_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut chaos = Chaos::start(dir.path(), 3, &[]).await.unwrap();
    chaos.leader().await.unwrap();
    let mut config = chaos.cluster.api_config();
    config.deadline = Duration::from_secs(30);
    let client = Client::new(config).unwrap();
    let mut n = 0;
    let mut id = || {
        n += 1;
        format!("mask:{n}")
    };
    for terminal in ["K-0101", "W-0101"] {
        client
            .register_terminal(RegisterTerminalRequest {
                request_id: id(),
                terminal_id: "A-ADMIN".into(),
                operator_id: "admin".into(),
                new_terminal_id: terminal.into(),
            })
            .await
            .unwrap();
    }
    let issue = IssueCardRequest {
        request_id: id(),
        terminal_id: "K-0101".into(),
        card_no: "HC00000001".into(),
        card_kind: CardKind::Hospital as i32,
        holder_name: HOLDER_NAME.into(),
        person_key: person_key(ID_NUMBER),
        id_masked: ID_MASKED.into(),
        phone: HOLDER_PHONE.into(),
        first_deposit: "200".into(),
        ..Default::default()
    };
    // Issue 16, point 3: a terminal that sends the full ID number, or a full phone number, in
    // place of the masked forms is refused, and nothing is stored.
    for (id_masked, phone) in [
        (ID_NUMBER, ""),
        ("110101*99003074512", ""),
        ("****************12", "1"),
        (ID_MASKED, "13800138000"),
        (ID_MASKED, "138-0013-8000"),
    ] {
        let unmasked = IssueCardRequest {
            request_id: id(),
            id_masked: id_masked.into(),
            phone: phone.into(),
            ..issue.clone()
        };
        match client.issue_card(unmasked).await {
            Err(yinyi_api::ApiError::Refused { code, reason, .. }) => assert_eq!(
                (code, reason.as_str()),
                (tonic::Code::InvalidArgument, "INVALID_HOLDER"),
                "{id_masked} {phone}"
            ),
            other => panic!("unmasked {id_masked:?} {phone:?} was taken: {other:?}"),
        }
    }
    client.issue_card(issue).await.unwrap();
    let token = format!("tok_{}", &person_key(BANK_CARD)[..24]);
    let top_up = TopUpBankCardRequest {
        request_id: id(),
        terminal_id: "K-0101".into(),
        card_no: "HC00000001".into(),
        bank_card_token: token,
        bank_card_masked: CARD_MASKED.into(),
        amount: "100".into(),
        ..Default::default()
    };
    // Asked again (same request) until the saga has an end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = client.top_up_bank_card(top_up.clone()).await.unwrap();
        if reply.state == "COMPLETED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "top-up still {}",
            reply.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .report_loss(CardRequest {
            request_id: id(),
            terminal_id: "W-0101".into(),
            operator_id: "op-1".into(),
            card_no: "HC00000001".into(),
            person_key: person_key(ID_NUMBER),
        })
        .await
        .unwrap();
    client
        .replace_card(ReplaceCardRequest {
            request_id: id(),
            terminal_id: "W-0101".into(),
            operator_id: "op-1".into(),
            old_card_no: "HC00000001".into(),
            new_card_no: "HC00000002".into(),
            person_key: person_key(ID_NUMBER),
        })
        .await
        .unwrap();
    // Issue 16, point 3: the name is served opened, and a value already in sealed form is
    // never taken from a terminal.
    let balance = client
        .query_balance(QueryBalanceRequest {
            card_no: "HC00000002".into(),
            account_id: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(balance.holder_name, HOLDER_NAME);
    let forged = IssueCardRequest {
        request_id: id(),
        terminal_id: "K-0101".into(),
        card_no: "HC00000009".into(),
        card_kind: CardKind::Hospital as i32,
        holder_name: format!("sealed:v1:{}", "ab".repeat(60)),
        person_key: person_key("110101199003070000"),
        id_masked: ID_MASKED.into(),
        ..Default::default()
    };
    match client.issue_card(forged).await {
        Err(yinyi_api::ApiError::Refused { reason, .. }) => assert_eq!(reason, "INVALID_HOLDER"),
        other => panic!("a sealed-looking name was taken: {other:?}"),
    }
    // Issue 16's acceptance: a thousand patients' names and phones, then a snapshot (the
    // state written out whole, uncompressed) on top of the log and tables.
    let cards: Vec<IssueCardRequest> = (0..1000u64)
        .map(|n| IssueCardRequest {
            request_id: format!("bulk-{n}"),
            terminal_id: "K-0101".into(),
            card_no: format!("HC{:08}", 1000 + n),
            card_kind: CardKind::Hospital as i32,
            holder_name: format!("{BULK_NAME}{n:04}"),
            person_key: person_key(&format!("1101011990{n:08}")),
            id_masked: ID_MASKED.into(),
            phone: format!("{BULK_PHONE}{n:04}"),
            first_deposit: "10".into(),
            ..Default::default()
        })
        .collect();
    let issued = client
        .issue_cards(IssueCardsRequest { cards })
        .await
        .unwrap();
    assert!(
        issued.results.iter().all(|r| r.issued.is_some()),
        "{:?}",
        issued.results.iter().find(|r| r.issued.is_none())
    );
    client.trigger_snapshot(NodeActionRequest {}).await.unwrap();
    let snapshot_written = || {
        chaos.ids().iter().any(|id| {
            std::fs::read_dir(dir.path().join(format!("node{id}/snapshots")))
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("snap-"))
                })
                .unwrap_or(false)
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !snapshot_written() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot was written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chaos
        .cluster
        .wait_converged(Duration::from_secs(30))
        .await
        .unwrap();
    // The callers' credential secret travels in a header and is kept nowhere.
    let credential = chaos.cluster.credential().to_string();
    let (_, credential_secret) = credential.split_once(':').unwrap();
    // Every node's files written out: stop them cleanly first.
    for node in chaos.ids() {
        chaos.stop(node).unwrap();
    }

    for secret in [
        ID_NUMBER,
        BANK_CARD,
        credential_secret,
        HOLDER_NAME,
        HOLDER_PHONE,
        BULK_NAME,
        BULK_PHONE,
    ] {
        let hits = found_in(dir.path(), secret);
        assert!(hits.is_empty(), "{secret} found in {hits:?}");
    }
    for masked in [ID_MASKED, CARD_MASKED] {
        assert!(
            !found_in(dir.path(), masked).is_empty(),
            "the masked form {masked} was not found: the scan did not read the data"
        );
    }
}
