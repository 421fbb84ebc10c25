//! The error convention of the public API. A refusal is a gRPC status whose code says what kind
//! of refusal it is and whose `google.rpc.ErrorInfo` detail (domain [`ERROR_DOMAIN`]) carries the
//! stable reason code, e.g. `FAILED_PRECONDITION` + `INSUFFICIENT_FUNDS`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The descriptors of the `google.rpc` types (`Status`, `ErrorInfo`, …), for reflection.
pub use tonic_types::pb::FILE_DESCRIPTOR_SET as GOOGLE_RPC_DESCRIPTOR_SET;

/// The `ErrorInfo.domain` of every yinyi reason.
pub const ERROR_DOMAIN: &str = "yinyi";

/// Response metadata naming the leader's address, sent with `UNAVAILABLE` when a node knows it.
pub const LEADER_HINT: &str = "x-yinyi-leader";

/// The longest message a status carries: messages quote the caller's input, and a status
/// travels in HTTP/2 headers, which a huge value would break (the caller would see INTERNAL).
pub const MAX_MESSAGE_CHARS: usize = 400;

/// A status with `reason` in an `ErrorInfo` detail.
pub fn status_with_reason(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        std::collections::HashMap::<String, String>::new(),
    );
    Status::with_error_details(code, bounded(message.into()), details)
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters, marked when cut.
fn bounded(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}… (cut)", &message[..end]),
        None => message,
    }
}

/// The yinyi reason code of a status, when it has one.
pub fn reason_of(status: &Status) -> Option<String> {
    let details = status.get_error_details();
    let info = details.error_info()?;
    (info.domain == ERROR_DOMAIN).then(|| info.reason.clone())
}

/// What a call through [`crate::Client`] can end in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The cluster refused the request for a reason that retrying will not change.
    #[error("{code:?} {reason}: {message}")]
    Refused {
        code: Code,
        /// The ledger's reason code, e.g. `INSUFFICIENT_FUNDS` (`""` when the status had none).
        reason: String,
        message: String,
    },
    /// Every retry failed until the deadline; the last error is kept. The request may or may
    /// not have been applied: send it again with the same request id to learn which.
    #[error("no answer within the deadline after {attempts} attempts; last: {last}")]
    DeadlineExceeded { attempts: u32, last: String },
    /// A node address that cannot be used.
    #[error("bad node address {0}")]
    BadAddress(String),
    /// A credential that cannot be sent.
    #[error("bad credential: {0}")]
    BadCredential(String),
}

impl ApiError {
    /// The reason code of a refusal.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ApiError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<Code> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn from_status(status: &Status) -> ApiError {
        ApiError::Refused {
            code: status.code(),
            reason: reason_of(status).unwrap_or_default(),
            message: status.message().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_survives_the_round_trip_through_status_details() {
        let status = status_with_reason(Code::FailedPrecondition, "INSUFFICIENT_FUNDS", "short");
        let bytes = status.details().to_vec();
        let received = Status::with_details(status.code(), status.message(), bytes.into());
        assert_eq!(reason_of(&received).as_deref(), Some("INSUFFICIENT_FUNDS"));
        let err = ApiError::from_status(&received);
        assert_eq!(err.reason(), Some("INSUFFICIENT_FUNDS"));
        assert_eq!(err.code(), Some(Code::FailedPrecondition));
    }

    #[test]
    fn a_message_quoting_huge_input_is_cut() {
        let status = status_with_reason(
            Code::InvalidArgument,
            "INVALID_AMOUNT",
            format!("amount: {:?} is not an amount", "9".repeat(10_000)),
        );
        assert!(status.message().chars().count() <= MAX_MESSAGE_CHARS + 10);
        assert!(status.message().ends_with("(cut)"));
        let short = status_with_reason(Code::NotFound, "CARD_NOT_FOUND", "no card 元");
        assert_eq!(short.message(), "no card 元");
    }

    #[test]
    fn a_status_without_details_has_no_reason() {
        assert_eq!(reason_of(&Status::unavailable("no leader")), None);
    }
}
