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

#[test]
fn an_exported_state_installs_into_another_store_with_the_same_digest() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let source = Store::open(a.path()).unwrap();
    a_patients_morning(&source);
    let target = Store::open(b.path()).unwrap();
    // Something the snapshot must replace, not merge with.
    let mut view = target.view();
    view.put_person(PersonKey::parse(&"b".repeat(64)).unwrap(), AccountId(99));
    target.commit_view(view, &[]).unwrap();
    let exported = source.export_state().unwrap();
    assert_eq!(exported.last_applied, Some(vec![1, 2, 3]));
    target.import_state(&exported.blob).unwrap();
    assert_eq!(target.digest().unwrap(), source.digest().unwrap());
    assert_eq!(
        target.sm_meta(SM_LAST_APPLIED).unwrap(),
        Some(vec![1, 2, 3])
    );
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
