//! openraft's own storage conformance suite against the RocksDB log store and state machine.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use yinyi_consensus::TypeConfig;
use yinyi_consensus::log_store::LogStore;
use yinyi_consensus::state_machine::StateMachine;
use yinyi_consensus::types::StorageError;
use yinyi_ledger::Rules;
use yinyi_storage::Store;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("open store"));
        let log = LogStore::new(store.clone());
        let sm = StateMachine::new(store, Rules::default(), dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_stores_pass_the_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
