//! yinyi-actors (to be built in the actor-layer issue): the ractor actors that run on the
//! leader. A `Router` spawns one `AccountActor` per patient account and one `TerminalActor` per
//! kiosk, window or channel on first use, passivates them when idle and restarts them after a
//! panic; actors keep a cache of their entity for cheap early rejections and hand their commands
//! to the consensus proposer, which batches them into Raft entries. The `BankGateway` actor owns
//! the link to the bank's front-end processor and drives bank sagas; `Recovery` drives every
//! Pending or InDoubt bank operation to an end after a leader change.
//!
//! Nothing is exported yet: the node currently proposes commands to consensus directly.
