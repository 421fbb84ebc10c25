//! yinyi-bank: the link to the bank's front-end processor (前置机). A message set modelled on
//! ISO 8583 (`message`), a strict length-prefixed codec that refuses bad frames and never
//! panics (`codec`), a client with connection reuse, per-call timeouts and a circuit breaker
//! (`client`), and the bank simulator behind `yinyi banksim`, with its own journal,
//! deduplication by reference, daily statements and injectable faults (`sim`).
//!
//! The sagas that drive bank operations through the ledger's state machine (Pending →
//! Completed / Declined / InDoubt → Reversed or Completed) live in the actors and come next.

pub mod client;
pub mod codec;
pub mod message;
pub mod sim;

pub use client::{BankClient, BankClientConfig, BankError};
pub use message::{Message, OpState, Processing, ResponseCode, StatementLine, settlement_lines};
pub use sim::{BankSim, Faults};
