//! yinyi-api: the public gRPC API of yinyi. The `.proto` files under `api/proto/yinyi/v1/`
//! (PaymentService, HisService, InpatientService, TerminalService, AdminService), the tonic code generated from
//! them, the error convention (a gRPC code plus the ledger's reason code in a
//! `google.rpc.ErrorInfo` detail of domain [`ERROR_DOMAIN`]), and [`client::Client`], the client
//! library: it talks to a list of nodes, retries `UNAVAILABLE` and timeouts with the same
//! request id and a bounded backoff, and applies deadlines.

pub mod client;
pub mod credential;
pub mod error;
pub mod tls;

/// The generated messages and services of `yinyi.v1`.
pub mod v1 {
    tonic::include_proto!("yinyi.v1");

    /// For gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("yinyi_v1_descriptor");
}

pub use client::{Client, ClientConfig};
pub use error::{ApiError, ERROR_DOMAIN, reason_of};
pub use tls::{SERVER_NAME, TlsFiles};

/// A duration as the command lines take it: `500ms`, `30s`, `10m`, `2h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let (n, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m or h"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} is not a duration"))?;
    let secs = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{text:?}: unit must be ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse_with_their_units() {
        use std::time::Duration;
        assert_eq!(
            super::parse_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(super::parse_duration("10").is_err());
        assert!(super::parse_duration("5d").is_err());
        assert!(super::parse_duration("x5s").is_err());
    }
}
