//! yinyi-bank (to be built in the bank-link issue): the link to the bank's front-end processor.
//! A length-prefixed binary message set modelled on ISO 8583 (debit, credit, reversal advice,
//! status query, statement), a strict codec whose bad frames are errors and never panics, a
//! client with connection reuse, per-call timeouts and a circuit breaker, and the bank simulator
//! behind `yinyi banksim` with its own journal, deduplication by reference and injectable faults.
//!
//! Nothing is exported yet; the ledger already models the bank operation state machine
//! (Pending → Completed / Declined / InDoubt → Reversed or Completed) that this crate will drive.
