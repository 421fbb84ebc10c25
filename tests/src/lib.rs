//! yinyi-tests (to be built in the failure-suite issue): the harness that starts real `yinyi`
//! processes and a bank simulator on loopback behind fault-injecting TCP proxies, the nemeses
//! (kill, pause, partition, rolling restart, bank down), the concurrent clients that record every
//! acknowledged outcome, and the checker of DOMAIN.md's invariants across every node.
//!
//! Until then the cluster tests live beside the code they test: `node/tests/cluster.rs` starts
//! real three-node clusters, `consensus/tests/conformance.rs` runs openraft's storage suite.
