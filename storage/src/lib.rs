//! yinyi-storage: one RocksDB per node. The Raft log and its meta, the ledger's state in column
//! families with documented key encodings (`keys`), the one codec every byte format goes
//! through (`codec`), a `StateView` over RocksDB whose writes land in one `WriteBatch` with the
//! last applied log id, state export/import for snapshots, digests and checkpoints.
//!
//! It knows nothing of openraft: Raft records arrive here already encoded.

pub mod codec;
pub mod keys;
pub mod store;

pub use codec::{CodecError, decode, encode};
pub use store::{ExportedState, RocksView, StorageError, Store};
