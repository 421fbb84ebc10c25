//! yinyi-tests: the failure suite. The harness starts real `yinyi` processes and a bank
//! simulator process on loopback with a fault-injecting proxy on every node-to-node link
//! (`harness`, `proxy`); the nemeses kill, pause, partition, slow, restart and take the bank
//! down while the load tester's outpatient clients keep paying (`nemesis`); the load tester's
//! checker then holds the healed cluster to every invariant. `tests/nemeses.rs` runs a short
//! form of each nemesis in `make test`; `yinyi-chaos` (`make chaos`) runs the long random mix.

pub mod bank_cluster;
pub mod harness;
pub mod nemesis;
pub mod powerfs;
pub mod proxy;
pub mod raw;
