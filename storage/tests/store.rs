//! RocksDB store: the ledger applied through `RocksView`, reopened, exported and imported.

use yinyi_ledger::*;
use yinyi_storage::Store;
use yinyi_storage::keys::{CF_ACCOUNTS, CF_JOURNAL, SM_LAST_APPLIED};

fn cmd(serial: u64, terminal: &str, body: CommandBody) -> Command {
    Command {
        request: RequestId::parse(&format!("r{serial}")).unwrap(),
        terminal: TerminalId::parse(terminal).unwrap(),
        operator: None,
        at: Timestamp(serial as i64),
        body,
    }
}

/// Registers a kiosk, issues a card with ¥100 and deposits ¥20; returns the account.
fn a_patients_morning(store: &Store) -> AccountId {
    let commands = [
        cmd(
            1,
            "A-ADMIN",
            CommandBody::RegisterTerminal {
                terminal: TerminalId::parse("K-01").unwrap(),
            },
        ),
        cmd(
            2,
            "K-01",
            CommandBody::IssueCard {
                card: CardNo::parse("HC0001").unwrap(),
                card_kind: CardKind::Hospital,
                holder: Holder {
                    name: "Li".into(),
                    person: PersonKey::parse(&"a".repeat(64)).unwrap(),
                    id_masked: "110****1234".into(),
                    phone: "138****0000".into(),
                },
                first_deposit: Some(Money::from_yuan(100)),
            },
        ),
        cmd(
            3,
            "K-01",
            CommandBody::DepositCash {
                card: CardNo::parse("HC0001").unwrap(),
                amount: Money::from_yuan(20),
            },
        ),
    ];
    let mut view = store.view();
    let mut account = None;
    for (i, c) in commands.iter().enumerate() {
        let ctx = ApplyCtx {
            txn: TxnId::new(10, i as u64),
            rules: Rules::default(),
        };
        let outcome = apply(c, &mut view, &ctx);
        if let Outcome::Done(Effect::CardIssued { account: a, .. }) = outcome {
            account = Some(a);
        }
        assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
    }
    // A command later in the same batch sees the earlier ones' writes.
    let account = account.unwrap();
    assert_eq!(
        view.account(account).unwrap().balance,
        Money::from_yuan(120)
    );
    store
        .commit_view(view, &[(SM_LAST_APPLIED, vec![1, 2, 3])])
        .unwrap();
    account
}

#[test]
fn applied_state_is_readable_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (account, digest) = {
        let store = Store::open(dir.path()).unwrap();
        let account = a_patients_morning(&store);
        let read: Account = store
            .get(CF_ACCOUNTS, &account.0.to_be_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(read.balance, Money::from_yuan(120));
        let journal: Vec<JournalEntry> = store
            .scan_prefix(CF_JOURNAL, &account.0.to_be_bytes(), 10)
            .unwrap();
        assert_eq!(journal.len(), 2);
        (account, store.digest().unwrap())
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.sm_meta(SM_LAST_APPLIED).unwrap(), Some(vec![1, 2, 3]));
    let read: Account = store
        .get(CF_ACCOUNTS, &account.0.to_be_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(read.balance, Money::from_yuan(120));
}

/// A patient's morning in a store of its own, exported to a snapshot file in frames of
/// `frame_bytes`: the directory (kept while the store is used), the store, the file and what
/// the export reported.
fn morning_snapshot(
    frame_bytes: usize,
) -> (
    tempfile::TempDir,
    Store,
    std::path::PathBuf,
    yinyi_storage::ExportedSnapshot,
) {
    let dir = tempfile::tempdir().unwrap();
    let source = Store::open(dir.path()).unwrap();
    a_patients_morning(&source);
    let file = dir.path().join("snap.bin");
    let exported = source
        .export_snapshot_in_frames(&mut std::fs::File::create(&file).unwrap(), frame_bytes)
        .unwrap();
    (dir, source, file, exported)
}

/// A record a snapshot must replace, not merge with.
fn a_stray_person(target: &Store) {
    let mut view = target.view();
    view.put_person(PersonKey::parse(&"b".repeat(64)).unwrap(), AccountId(99));
    target.commit_view(view, &[]).unwrap();
}

#[test]
fn an_exported_snapshot_installs_into_another_store_with_the_same_digest() {
    let (_a, source, file, exported) = morning_snapshot(yinyi_storage::snapshot::FRAME_BYTES);
    let b = tempfile::tempdir().unwrap();
    let target = Store::open(b.path()).unwrap();
    a_stray_person(&target);
    assert_eq!(exported.last_applied, Some(vec![1, 2, 3]));
    assert_eq!(exported.bytes, std::fs::metadata(&file).unwrap().len());
    let records = target.install_snapshot_file(&file, b"marker").unwrap();
    assert_eq!(records, exported.records);
    assert_eq!(target.digest().unwrap(), source.digest().unwrap());
    assert_eq!(
        target.sm_meta(SM_LAST_APPLIED).unwrap(),
        Some(vec![1, 2, 3])
    );
    assert_eq!(target.unfinished_install().unwrap(), None);
}

/// An install cut short by a crash leaves its marker; the state is then half replaced, and the
/// install run again from the same file ends with the snapshot's state exactly.
#[test]
fn an_install_cut_short_by_a_crash_is_finished_from_its_file_after_a_restart() {
    let (_a, source, file, exported) = morning_snapshot(64);
    let b = tempfile::tempdir().unwrap();
    assert!(exported.records > 3, "{} records", exported.records);
    {
        let target = Store::open(b.path()).unwrap();
        a_stray_person(&target);
        assert!(
            target
                .install_snapshot_file_cut_after(&file, b"marker", 2)
                .is_err()
        );
    }
    let target = Store::open(b.path()).unwrap();
    assert_eq!(
        target.unfinished_install().unwrap(),
        Some(b"marker".to_vec())
    );
    assert_ne!(target.digest().unwrap(), source.digest().unwrap());
    target.install_snapshot_file(&file, b"marker").unwrap();
    assert_eq!(target.unfinished_install().unwrap(), None);
    assert_eq!(target.digest().unwrap(), source.digest().unwrap());
}

/// A snapshot file cut short, altered or padded is refused before the state is touched.
#[test]
fn a_damaged_snapshot_file_is_refused_and_the_state_is_untouched() {
    let (_a, _source, file, _) = morning_snapshot(yinyi_storage::snapshot::FRAME_BYTES);
    let b = tempfile::tempdir().unwrap();
    let good = std::fs::read(&file).unwrap();
    let target = Store::open(b.path()).unwrap();
    let before = target.digest().unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut padded = good.clone();
    padded.extend_from_slice(&good[..good.len().min(40)]);
    for (what, bytes) in [
        ("cut short", good[..good.len() - 3].to_vec()),
        ("cut at a frame", good[..good.len() / 3].to_vec()),
        ("altered", flipped),
        ("padded", padded),
        ("empty", Vec::new()),
    ] {
        let bad = b.path().join("bad.bin");
        std::fs::write(&bad, &bytes).unwrap();
        assert!(
            target.install_snapshot_file(&bad, b"marker").is_err(),
            "a snapshot file {what} was installed"
        );
        assert_eq!(
            target.digest().unwrap(),
            before,
            "{what}: the state changed"
        );
        assert_eq!(target.unfinished_install().unwrap(), None, "{what}");
    }
}

#[test]
fn the_log_appends_reads_truncates_and_purges_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .append_log((1..=10).map(|i| (i, vec![i as u8])))
        .unwrap();
    store.sync_wal().unwrap();
    assert_eq!(
        store
            .log_range(3, 6)
            .unwrap()
            .iter()
            .map(|(i, _)| *i)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(store.last_log().unwrap().unwrap().0, 10);
    store.truncate_log(8).unwrap();
    assert_eq!(store.last_log().unwrap().unwrap().0, 7);
    store.purge_log(4, vec![4]).unwrap();
    assert_eq!(store.log_range(0, 100).unwrap().first().unwrap().0, 5);
    assert_eq!(store.raft_meta(b"last_purged").unwrap(), Some(vec![4]));
}

#[test]
fn a_checkpoint_opens_as_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    a_patients_morning(&store);
    let copy = dir.path().join("backup");
    store.checkpoint(&copy).unwrap();
    let restored = Store::open(&copy).unwrap();
    assert_eq!(restored.digest().unwrap(), store.digest().unwrap());
}

#[test]
fn the_journal_reads_newest_first_and_pages_before_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let account = a_patients_morning(&store);
    let prefix = account.0.to_be_bytes();
    let newest_first: Vec<JournalEntry> = store
        .scan_prefix_rev(CF_JOURNAL, &prefix, None, 10)
        .unwrap();
    assert_eq!(newest_first.len(), 2);
    assert!(newest_first[0].txn > newest_first[1].txn);
    assert_eq!(newest_first[0].kind, EntryKind::CashDeposit);
    assert_eq!(newest_first[0].balance_after, Money::from_yuan(120));

    let one: Vec<JournalEntry> = store.scan_prefix_rev(CF_JOURNAL, &prefix, None, 1).unwrap();
    assert_eq!(one, newest_first[..1]);
    // The next page starts strictly before the last one seen.
    let before = yinyi_storage::keys::journal_key(account, one[0].txn);
    let page: Vec<JournalEntry> = store
        .scan_prefix_rev(CF_JOURNAL, &prefix, Some(&before), 10)
        .unwrap();
    assert_eq!(page, newest_first[1..]);
    // Another account's prefix sees nothing of this one.
    let other: Vec<JournalEntry> = store
        .scan_prefix_rev(CF_JOURNAL, &(account.0 + 1).to_be_bytes(), None, 10)
        .unwrap();
    assert!(other.is_empty());
}

fn prune(serial: u64, before: i64, limit: u32) -> Command {
    cmd(
        serial,
        "S-PRUNE",
        CommandBody::PruneRequests {
            before: Timestamp(before),
            limit,
        },
    )
}

/// A prune through RocksDB lets go of the same records as through `MemState` (the ledger's
/// own test): old request records that are not audited, with their expiry index, also when
/// two prunes and the records they see share one batch; nothing else of the state changes.
#[test]
fn a_prune_deletes_old_request_records_and_their_index_in_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    a_patients_morning(&store); // requests r1, r2, r3 at times 1, 2, 3
    let ctx = |i| ApplyCtx {
        txn: TxnId::new(100 + i, 0),
        rules: Rules::default(),
    };
    let mut view = store.view();
    // In one batch: a prune of what came before time 3 (r1 is audited: terminal
    // registration), a deposit at time 10, and a second prune that finds nothing more.
    let outcomes: Vec<Outcome> = [
        prune(5, 3, 100),
        cmd(
            10,
            "K-01",
            CommandBody::DepositCash {
                card: CardNo::parse("HC0001").unwrap(),
                amount: Money::from_yuan(5),
            },
        ),
        prune(11, 3, 100),
    ]
    .iter()
    .enumerate()
    .map(|(i, c)| apply(c, &mut view, &ctx(i as u64)))
    .collect();
    assert_eq!(
        outcomes[0],
        Outcome::Done(Effect::RequestsPruned { requests: 1 })
    );
    assert_eq!(
        outcomes[2],
        Outcome::Done(Effect::RequestsPruned { requests: 0 })
    );
    store.commit_view(view, &[]).unwrap();
    let kiosk = TerminalId::parse("K-01").unwrap();
    let view = store.view();
    assert!(
        view.request(&kiosk, &RequestId::parse("r2").unwrap())
            .is_none()
    );
    assert!(
        view.request(&kiosk, &RequestId::parse("r3").unwrap())
            .is_some()
    );
    assert!(
        view.request(
            &TerminalId::parse("A-ADMIN").unwrap(),
            &RequestId::parse("r1").unwrap()
        )
        .is_some(),
        "the audited registration was let go"
    );
    assert!(view.expired_requests(Timestamp(3), 100).is_empty());
    assert_eq!(view.expired_requests(Timestamp(11), 100).len(), 3); // r3, prune r5, r10
    // The index survives a reopen: it is part of the state.
    drop(view);
    let digest = store.digest().unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.digest().unwrap(), digest);
}

/// The saga recovery and the daily report read indexes, not every record ever made: a bank
/// operation is in `bank_ops_open` exactly while it is PENDING or IN_DOUBT, and a day's
/// reports are found by their business day.
#[test]
fn open_bank_operations_and_a_days_reports_are_read_through_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    a_patients_morning(&store);
    let ctx = |i| ApplyCtx {
        txn: TxnId::new(200 + i, 0),
        rules: Rules::default(),
    };
    let top_up = |serial| {
        cmd(
            serial,
            "K-01",
            CommandBody::StartBankOp {
                card: CardNo::parse("HC0001").unwrap(),
                external: External::BankCard {
                    token: CardToken::parse("tok_bank_0001").unwrap(),
                    masked: "6222********0001".into(),
                },
                purpose: BankPurpose::TopUp,
                amount: Some(Money::from_yuan(50)),
            },
        )
    };
    let mut view = store.view();
    let mut refs = Vec::new();
    for (i, serial) in [20u64, 21].into_iter().enumerate() {
        match apply(&top_up(serial), &mut view, &ctx(i as u64)) {
            Outcome::Done(Effect::BankOpStarted { bank_ref, .. }) => refs.push(bank_ref),
            other => panic!("{other:?}"),
        }
    }
    store.commit_view(view, &[]).unwrap();
    let open: Vec<BankRef> = store
        .open_bank_ops()
        .unwrap()
        .into_iter()
        .map(|op| op.bank_ref)
        .collect();
    assert_eq!(open, refs);

    let mut view = store.view();
    let done = cmd(
        22,
        "S-SAGA",
        CommandBody::CompleteBankOp {
            bank_ref: refs[0].clone(),
            bank_note: "approved".into(),
        },
    );
    assert!(matches!(apply(&done, &mut view, &ctx(5)), Outcome::Done(_)));
    store.commit_view(view, &[]).unwrap();
    let open: Vec<BankRef> = store
        .open_bank_ops()
        .unwrap()
        .into_iter()
        .map(|op| op.bank_ref)
        .collect();
    assert_eq!(open, refs[1..]);

    // The kiosk's cash is collected at 30 ms after the epoch: business day 1970-01-01 in China
    // Standard Time, and no other day has reports.
    let mut view = store.view();
    let mut collect = cmd(
        30,
        "K-01",
        CommandBody::CollectCash {
            counted: Money::from_yuan(120),
        },
    );
    collect.operator = Some(OperatorId::parse("op-wang").unwrap());
    let collected = apply(&collect, &mut view, &ctx(6));
    assert!(matches!(collected, Outcome::Done(_)), "{collected:?}");
    store.commit_view(view, &[]).unwrap();
    let day = store.reports_of_day("1970-01-01").unwrap();
    assert!(
        matches!(day.as_slice(), [Report::Collection(c)] if c.counted == Money::from_yuan(120)),
        "{day:?}"
    );
    assert!(store.reports_of_day("1970-01-02").unwrap().is_empty());
}
