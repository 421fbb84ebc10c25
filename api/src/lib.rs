//! yinyi-api: the public gRPC API of yinyi. The `.proto` files under `api/proto/yinyi/v1/`
//! (PaymentService, HisService, TerminalService, AdminService), the tonic code generated from
//! them, the error convention (a gRPC code plus the ledger's reason code in a
//! `google.rpc.ErrorInfo` detail of domain [`ERROR_DOMAIN`]), and [`client::Client`], the client
//! library: it talks to a list of nodes, retries `UNAVAILABLE` and timeouts with the same
//! request id and a bounded backoff, and applies deadlines.

pub mod client;
pub mod error;

/// The generated messages and services of `yinyi.v1`.
pub mod v1 {
    tonic::include_proto!("yinyi.v1");

    /// For gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("yinyi_v1_descriptor");
}

pub use client::{Client, ClientConfig};
pub use error::{ApiError, ERROR_DOMAIN, reason_of};
