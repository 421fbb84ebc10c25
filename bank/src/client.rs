//! The client of the bank's front-end processor: a small pool of reused TCP connections, one
//! request in flight per connection, a timeout per call, and a circuit breaker that fails fast
//! while the bank is down instead of piling up calls.
//!
//! A financial request that times out or loses its connection has an **unknown** outcome: the
//! caller must treat it as in doubt (reverse it or ask its status), never as declined. So has
//! one answered by a response that does not fit it (another reference, amount or processing
//! code): that is a protocol error, never an approval of something else.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::codec::{FrameError, read_message, write_message};
use crate::message::Message;

#[derive(Debug, Clone)]
pub struct BankClientConfig {
    /// The front-end processor, `host:port`.
    pub addr: String,
    /// One call's timeout, connecting included.
    pub call_timeout: Duration,
    /// Idle connections kept for reuse.
    pub pool_size: usize,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one through.
    pub breaker_open_for: Duration,
}

impl BankClientConfig {
    pub fn new(addr: impl Into<String>) -> BankClientConfig {
        BankClientConfig {
            addr: addr.into(),
            call_timeout: Duration::from_secs(3),
            pool_size: 32,
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// No answer in time: the request may or may not have been applied.
    #[error("no answer from the bank within {0:?}")]
    Timeout(Duration),
    /// The connection failed or closed; after the request was sent the outcome is unknown.
    #[error("bank connection: {0}")]
    Connection(String),
    /// The breaker is open: nothing was sent.
    #[error("the bank link is down (circuit open); nothing was sent")]
    CircuitOpen,
    /// The bank answered something that does not fit the request.
    #[error("bank protocol: {0}")]
    Protocol(String),
}

impl BankError {
    /// Whether the request certainly did not reach the bank.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, BankError::CircuitOpen)
    }
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct BankClient {
    config: BankClientConfig,
    idle: Mutex<Vec<TcpStream>>,
    breaker: Mutex<Breaker>,
}

impl BankClient {
    pub fn new(config: BankClientConfig) -> BankClient {
        BankClient {
            config,
            idle: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::default()),
        }
    }

    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// Whether the breaker is open now.
    pub async fn is_open(&self) -> bool {
        let breaker = self.breaker.lock().await;
        breaker.open_until.is_some_and(|t| Instant::now() < t)
    }

    async fn admit(&self) -> Result<(), BankError> {
        let mut breaker = self.breaker.lock().await;
        match breaker.open_until {
            Some(until) if Instant::now() < until => Err(BankError::CircuitOpen),
            Some(_) => {
                // Half open: this call is the trial; a failure re-opens at once.
                breaker.open_until = None;
                breaker.failures = self.config.breaker_failures.saturating_sub(1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn record(&self, ok: bool) {
        let mut breaker = self.breaker.lock().await;
        if ok {
            breaker.failures = 0;
            return;
        }
        breaker.failures += 1;
        if breaker.failures >= self.config.breaker_failures {
            breaker.open_until = Some(Instant::now() + self.config.breaker_open_for);
            metrics::counter!("bank_breaker_opened_total").increment(1);
            tracing::warn!(addr = %self.config.addr, "bank link failing: circuit open");
        }
    }

    /// Sends `request` and returns the bank's answer.
    pub async fn call(&self, request: &Message) -> Result<Message, BankError> {
        self.admit().await?;
        let timeout = self.config.call_timeout;
        let result = match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(BankError::Timeout(timeout)),
        };
        let healthy = !matches!(
            result,
            Err(BankError::Timeout(_) | BankError::Connection(_))
        );
        self.record(healthy).await;
        let code = match &result {
            Ok(_) => "ok",
            Err(BankError::Timeout(_)) => "timeout",
            Err(BankError::Connection(_)) => "connection",
            Err(BankError::CircuitOpen) => "circuit_open",
            Err(BankError::Protocol(_)) => "protocol",
        };
        metrics::counter!("bank_calls_total", "mti" => request.mti(), "result" => code)
            .increment(1);
        result
    }

    async fn exchange(&self, request: &Message) -> Result<Message, BankError> {
        let mut stream = match self.idle.lock().await.pop() {
            Some(stream) => stream,
            None => TcpStream::connect(&self.config.addr)
                .await
                .map_err(|e| BankError::Connection(format!("connect {}: {e}", self.config.addr)))?,
        };
        let _ = stream.set_nodelay(true);
        write_message(&mut stream, request)
            .await
            .map_err(connection)?;
        let answer = read_message(&mut stream)
            .await
            .map_err(connection)?
            .ok_or_else(|| BankError::Connection("the bank closed the connection".into()))?;
        if let Err(misfit) = answers(request, &answer) {
            tracing::error!(addr = %self.config.addr, "the bank's answer does not fit: {misfit}");
            return Err(BankError::Protocol(misfit));
        }
        let mut idle = self.idle.lock().await;
        if idle.len() < self.config.pool_size {
            idle.push(stream);
        }
        Ok(answer)
    }
}

fn connection(e: FrameError) -> BankError {
    match e {
        FrameError::Io(e) => BankError::Connection(e.to_string()),
        FrameError::Codec(e) => BankError::Protocol(e.to_string()),
    }
}

/// Whether `answer` is the response to `request`: the same type pair and reference, and for a
/// financial request the same amount and processing code. Otherwise, how it differs.
fn answers(request: &Message, answer: &Message) -> Result<(), String> {
    let fits = match (request, answer) {
        (
            Message::FinancialRequest {
                bank_ref: a,
                amount: asked,
                processing: p,
                ..
            },
            Message::FinancialResponse {
                bank_ref: b,
                amount: answered,
                processing: q,
                ..
            },
        ) => {
            if a == b && (asked != answered || p != q) {
                return Err(format!(
                    "0200 for {a} of {asked} ({p:?}) answered by 0210 of {answered} ({q:?})"
                ));
            }
            a == b
        }
        (Message::ReversalAdvice { bank_ref: a, .. }, Message::ReversalAck { bank_ref: b, .. })
        | (
            Message::CompletionAdvice { bank_ref: a, .. },
            Message::CompletionAck { bank_ref: b, .. },
        )
        | (Message::StatusQuery { bank_ref: a }, Message::StatusReply { bank_ref: b, .. }) => {
            a == b
        }
        (Message::StatementRequest { date: a }, Message::Statement { date: b, .. })
        | (Message::SettlementRequest { date: a }, Message::SettlementAdvice { date: b, .. }) => {
            a == b
        }
        (Message::SetFaults { .. }, Message::FaultsAck { .. }) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{} answered by a {} that is not its response",
            request.mti(),
            answer.mti()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Processing, ResponseCode};
    use yinyi_ledger::{BankRef, CardToken, Money};

    fn reference(n: u64) -> BankRef {
        BankRef::parse(&format!("Y{n:019}")).unwrap()
    }

    /// Issue 15, path 7: an approval is only trusted for what was asked.
    #[test]
    fn a_response_fits_its_request_only_with_the_same_reference_amount_and_processing() {
        let request = Message::FinancialRequest {
            processing: Processing::Debit,
            bank_ref: reference(1),
            token: CardToken::parse("tok_bank_0001").unwrap(),
            amount: Money::from_yuan(50),
            at_ms: 0,
        };
        let response = |n: u64, processing, yuan: i64| Message::FinancialResponse {
            processing,
            bank_ref: reference(n),
            amount: Money::from_yuan(yuan),
            code: ResponseCode::Approved,
        };
        assert_eq!(
            answers(&request, &response(1, Processing::Debit, 50)),
            Ok(())
        );
        for misfit in [
            response(2, Processing::Debit, 50),
            response(1, Processing::Debit, 51),
            response(1, Processing::Credit, 50),
            response(1, Processing::ChannelDebit, 50),
        ] {
            assert!(answers(&request, &misfit).is_err(), "{misfit:?}");
        }
        let status = Message::StatusReply {
            bank_ref: reference(1),
            state: crate::message::OpState::Applied,
            amount: Money::from_yuan(50),
        };
        assert!(answers(&request, &status).is_err());
    }
}
