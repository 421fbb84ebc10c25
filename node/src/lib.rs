//! yinyi-node: the `yinyi` binary's parts. `start` runs a node (config, store, Raft, gRPC
//! servers, cluster formation, clean shutdown); `ctl` is for operators; `demo` and `bench` run a
//! local cluster of real processes; `local` and `client` let tests do the same.

pub mod api;
pub mod backend;
pub mod bank_link;
pub mod bench;
pub mod bench_api;
pub mod certs;
pub mod client;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod disk;
pub mod guide;
pub mod history;
pub mod local;
pub mod observe;
pub mod recon;
pub mod retention;
pub mod scenario;
pub mod seal;
pub mod server;
pub mod snapshot_probe;
