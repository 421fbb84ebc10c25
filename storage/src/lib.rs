//! yinyi-storage: one RocksDB per node. The Raft log and its meta, the ledger's state in column
//! families with documented key encodings (`keys`), the one codec every byte format goes
//! through (`codec`), a `StateView` over RocksDB whose writes land in one `WriteBatch` with the
//! last applied log id, snapshots streamed to and from files in frames, digests and checkpoints.
//!
//! It knows nothing of openraft: Raft records arrive here already encoded.

pub mod codec;
pub mod keys;
pub mod snapshot;
pub mod store;

pub use codec::{CodecError, decode, encode};
pub use snapshot::{ExportedSnapshot, StagedSnapshot};
pub use store::{
    DEFAULT_BLOCK_CACHE_BYTES, InsuranceDay, InsuranceList, RocksView, StorageError, Store,
    decode_bill,
};
