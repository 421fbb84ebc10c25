//! The wire format: a frame is a 4-byte big-endian length and a body; a body is the 4-digit
//! MTI and its fields in a fixed order. Numbers are fixed-width ASCII digits (amounts in fen,
//! 12 digits, as ISO 8583 field 4), variable text is prefixed by its length in 2 or 3 ASCII
//! digits (LLVAR, LLLVAR). Decoding is strict: a wrong length, a bad digit, an unknown MTI or
//! code, an invalid id or trailing bytes is an error, never a panic.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yinyi_ledger::{BankRef, CardToken, Money};

use crate::message::{Message, OpState, Processing, ResponseCode, StatementLine};

/// The largest frame either side accepts (a day's statement of a big hospital fits).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
const AMOUNT_DIGITS: usize = 12;
const TIME_DIGITS: usize = 15;
const COUNT_DIGITS: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    FrameTooLarge(usize),
    #[error("message ends early: {0} needs more bytes")]
    Truncated(&'static str),
    #[error("{0} is not made of ASCII digits")]
    NotDigits(&'static str),
    #[error("unknown message type {0:?}")]
    UnknownMti(String),
    #[error("bad {field}: {text}")]
    Bad { field: &'static str, text: String },
    #[error("{0} bytes left after the last field")]
    Trailing(usize),
    #[error("{field} does not fit its {width} digits")]
    TooWide { field: &'static str, width: usize },
}

// ---- encoding ----

struct Writer(Vec<u8>);

impl Writer {
    fn digits(&mut self, field: &'static str, value: u64, width: usize) -> Result<(), CodecError> {
        let text = format!("{value:0width$}");
        if text.len() != width {
            return Err(CodecError::TooWide { field, width });
        }
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn amount(&mut self, amount: Money) -> Result<(), CodecError> {
        let cents = u64::try_from(amount.cents()).map_err(|_| CodecError::Bad {
            field: "amount",
            text: amount.to_string(),
        })?;
        self.digits("amount", cents, AMOUNT_DIGITS)
    }

    fn time(&mut self, at_ms: i64) -> Result<(), CodecError> {
        let ms = u64::try_from(at_ms).map_err(|_| CodecError::Bad {
            field: "time",
            text: at_ms.to_string(),
        })?;
        self.digits("time", ms, TIME_DIGITS)
    }

    fn var(&mut self, field: &'static str, text: &str, width: usize) -> Result<(), CodecError> {
        self.digits(field, text.len() as u64, width)?;
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn processing(&mut self, p: Processing) {
        self.raw(match p {
            Processing::Debit => b"000000",
            Processing::Credit => b"200000",
            Processing::ChannelDebit => b"300000",
            Processing::PreAuth => b"030000",
        });
    }
}

/// The body of `message` (without the frame length).
pub fn encode(message: &Message) -> Result<Vec<u8>, CodecError> {
    let mut w = Writer(Vec::with_capacity(64));
    w.raw(message.mti().as_bytes());
    match message {
        Message::FinancialRequest {
            processing,
            bank_ref,
            token,
            amount,
            at_ms,
        } => {
            w.processing(*processing);
            w.raw(bank_ref.as_str().as_bytes());
            w.var("token", token.as_str(), 2)?;
            w.amount(*amount)?;
            w.time(*at_ms)?;
        }
        Message::FinancialResponse {
            processing,
            bank_ref,
            amount,
            code,
        } => {
            w.processing(*processing);
            w.raw(bank_ref.as_str().as_bytes());
            w.amount(*amount)?;
            w.raw(code.as_str().as_bytes());
        }
        Message::CompletionAdvice {
            bank_ref,
            original,
            amount,
            ..
        } => {
            w.raw(bank_ref.as_str().as_bytes());
            w.raw(original.as_str().as_bytes());
            w.amount(*amount)?;
        }
        Message::CompletionAck { bank_ref, code } => {
            w.raw(bank_ref.as_str().as_bytes());
            w.raw(code.as_str().as_bytes());
        }
        Message::ReversalAdvice {
            bank_ref, amount, ..
        } => {
            w.raw(bank_ref.as_str().as_bytes());
            w.amount(*amount)?;
        }
        Message::ReversalAck { bank_ref, code } => {
            w.raw(bank_ref.as_str().as_bytes());
            w.raw(code.as_str().as_bytes());
        }
        Message::StatusQuery { bank_ref } => w.raw(bank_ref.as_str().as_bytes()),
        Message::StatusReply {
            bank_ref,
            state,
            amount,
        } => {
            w.raw(bank_ref.as_str().as_bytes());
            w.raw(&[state.as_char()]);
            w.amount(*amount)?;
        }
        Message::StatementRequest { date } => w.raw(check_date(date)?.as_bytes()),
        Message::Statement { date, lines } => {
            w.raw(check_date(date)?.as_bytes());
            w.digits("line count", lines.len() as u64, COUNT_DIGITS)?;
            for line in lines {
                w.raw(line.bank_ref.as_str().as_bytes());
                w.processing(line.processing);
                w.var("token", line.token.as_str(), 2)?;
                w.amount(line.amount)?;
                w.raw(&[line.state.as_char()]);
                w.time(line.at_ms)?;
            }
        }
        Message::SettlementRequest { date } => w.raw(check_date(date)?.as_bytes()),
        Message::SettlementAdvice {
            date,
            paid,
            amount,
            reference,
        } => {
            w.raw(check_date(date)?.as_bytes());
            w.raw(if *paid { b"1" } else { b"0" });
            w.raw(if amount.is_negative() { b"-" } else { b"+" });
            w.amount(Money::from_cents(amount.cents().abs()))?;
            w.var("reference", reference, 2)?;
        }
        Message::SetFaults { spec } => w.var("fault spec", spec, 3)?,
        Message::FaultsAck { ok, text } => {
            w.raw(if *ok { b"1" } else { b"0" });
            w.var("text", text, 3)?;
        }
    }
    Ok(w.0)
}

fn check_date(date: &str) -> Result<&str, CodecError> {
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        Ok(date)
    } else {
        Err(CodecError::Bad {
            field: "date",
            text: truncate(date),
        })
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

// ---- decoding ----

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(CodecError::Truncated(field))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn text(&mut self, field: &'static str, n: usize) -> Result<&'a str, CodecError> {
        let bytes = self.take(field, n)?;
        std::str::from_utf8(bytes).map_err(|_| CodecError::Bad {
            field,
            text: String::from_utf8_lossy(bytes).chars().take(40).collect(),
        })
    }

    fn digits(&mut self, field: &'static str, n: usize) -> Result<u64, CodecError> {
        let bytes = self.take(field, n)?;
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(CodecError::NotDigits(field));
        }
        bytes.iter().try_fold(0u64, |acc, b| {
            acc.checked_mul(10)
                .and_then(|a| a.checked_add(u64::from(b - b'0')))
                .ok_or(CodecError::TooWide { field, width: n })
        })
    }

    fn amount(&mut self) -> Result<Money, CodecError> {
        let cents = self.digits("amount", AMOUNT_DIGITS)?;
        // 12 digits always fit an i64.
        Ok(Money::from_cents(cents as i64))
    }

    fn time(&mut self) -> Result<i64, CodecError> {
        // 15 digits always fit an i64.
        Ok(self.digits("time", TIME_DIGITS)? as i64)
    }

    fn var(&mut self, field: &'static str, width: usize) -> Result<&'a str, CodecError> {
        let len = self.digits(field, width)? as usize;
        self.text(field, len)
    }

    fn bank_ref(&mut self) -> Result<BankRef, CodecError> {
        let text = self.text("bank reference", 20)?;
        BankRef::parse(text).map_err(|e| CodecError::Bad {
            field: "bank reference",
            text: e.to_string(),
        })
    }

    fn token(&mut self) -> Result<CardToken, CodecError> {
        let text = self.var("token", 2)?;
        CardToken::parse(text).map_err(|e| CodecError::Bad {
            field: "token",
            text: e.to_string(),
        })
    }

    fn processing(&mut self) -> Result<Processing, CodecError> {
        match self.take("processing code", 6)? {
            b"000000" => Ok(Processing::Debit),
            b"200000" => Ok(Processing::Credit),
            b"300000" => Ok(Processing::ChannelDebit),
            b"030000" => Ok(Processing::PreAuth),
            other => Err(CodecError::Bad {
                field: "processing code",
                text: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    }

    fn code(&mut self) -> Result<ResponseCode, CodecError> {
        let text = self.text("response code", 2)?;
        ResponseCode::parse(text).ok_or_else(|| CodecError::Bad {
            field: "response code",
            text: text.to_string(),
        })
    }

    fn state(&mut self) -> Result<OpState, CodecError> {
        let b = self.take("state", 1)?[0];
        OpState::parse(b).ok_or_else(|| CodecError::Bad {
            field: "state",
            text: (b as char).to_string(),
        })
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, CodecError> {
        match self.take(field, 1)? {
            b"1" => Ok(true),
            b"0" => Ok(false),
            other => Err(CodecError::Bad {
                field,
                text: String::from_utf8_lossy(other).into_owned(),
            }),
        }
    }

    fn date(&mut self) -> Result<String, CodecError> {
        let text = self.text("date", 8)?;
        check_date(text).map(str::to_string)
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// Decodes one body.
pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let mti = r.text("message type", 4)?;
    let message = match mti {
        "0200" => Message::FinancialRequest {
            processing: r.processing()?,
            bank_ref: r.bank_ref()?,
            token: r.token()?,
            amount: r.amount()?,
            at_ms: r.time()?,
        },
        "0210" => Message::FinancialResponse {
            processing: r.processing()?,
            bank_ref: r.bank_ref()?,
            amount: r.amount()?,
            code: r.code()?,
        },
        "0220" | "0221" => Message::CompletionAdvice {
            bank_ref: r.bank_ref()?,
            original: r.bank_ref()?,
            amount: r.amount()?,
            repeat: mti == "0221",
        },
        "0230" => Message::CompletionAck {
            bank_ref: r.bank_ref()?,
            code: r.code()?,
        },
        "0420" | "0421" => Message::ReversalAdvice {
            bank_ref: r.bank_ref()?,
            amount: r.amount()?,
            repeat: mti == "0421",
        },
        "0430" => Message::ReversalAck {
            bank_ref: r.bank_ref()?,
            code: r.code()?,
        },
        "0600" => Message::StatusQuery {
            bank_ref: r.bank_ref()?,
        },
        "0610" => Message::StatusReply {
            bank_ref: r.bank_ref()?,
            state: r.state()?,
            amount: r.amount()?,
        },
        "0800" => Message::StatementRequest { date: r.date()? },
        "0810" => {
            let date = r.date()?;
            let count = r.digits("line count", COUNT_DIGITS)? as usize;
            // Each line takes at least 20 + 6 + 2 + 8 + 12 + 1 + 15 bytes: a count the
            // frame cannot hold is refused before anything is allocated for it.
            if count > bytes.len() / 64 {
                return Err(CodecError::Truncated("statement lines"));
            }
            let mut lines = Vec::with_capacity(count);
            for _ in 0..count {
                lines.push(StatementLine {
                    bank_ref: r.bank_ref()?,
                    processing: r.processing()?,
                    token: r.token()?,
                    amount: r.amount()?,
                    state: r.state()?,
                    at_ms: r.time()?,
                });
            }
            Message::Statement { date, lines }
        }
        "0820" => Message::SettlementRequest { date: r.date()? },
        "0830" => {
            let date = r.date()?;
            let paid = r.flag("paid")?;
            let negative = match r.take("sign", 1)? {
                b"+" => false,
                b"-" => true,
                other => {
                    return Err(CodecError::Bad {
                        field: "sign",
                        text: String::from_utf8_lossy(other).into_owned(),
                    });
                }
            };
            let amount = r.amount()?;
            Message::SettlementAdvice {
                date,
                paid,
                amount: if negative { amount.negated() } else { amount },
                reference: r.var("reference", 2)?.to_string(),
            }
        }
        "9800" => Message::SetFaults {
            spec: r.var("fault spec", 3)?.to_string(),
        },
        "9810" => Message::FaultsAck {
            ok: r.flag("ok")?,
            text: r.var("text", 3)?.to_string(),
        },
        other => return Err(CodecError::UnknownMti(truncate(other))),
    };
    r.finish()?;
    Ok(message)
}

// ---- framing ----

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Writes `message` as one frame.
pub async fn write_message<W: AsyncWriteExt + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), FrameError> {
    let body = encode(message)?;
    if body.len() > MAX_FRAME {
        return Err(CodecError::FrameTooLarge(body.len()).into());
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it; `Ok(None)` when the peer closed cleanly between frames.
pub async fn read_message<R: AsyncReadExt + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::FrameTooLarge(len).into());
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(decode(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bank_ref() -> impl Strategy<Value = BankRef> {
        (0u64..10_000_000_000_000_000_000)
            .prop_map(|n| BankRef::parse(&format!("Y{n:019}")).unwrap())
    }

    fn token() -> impl Strategy<Value = CardToken> {
        "[A-Za-z0-9_-]{8,64}".prop_map(|t| CardToken::parse(&t).unwrap())
    }

    fn money() -> impl Strategy<Value = Money> {
        (0i64..999_999_999_999).prop_map(Money::from_cents)
    }

    fn processing() -> impl Strategy<Value = Processing> {
        prop_oneof![
            Just(Processing::Debit),
            Just(Processing::Credit),
            Just(Processing::ChannelDebit),
            Just(Processing::PreAuth)
        ]
    }

    fn code() -> impl Strategy<Value = ResponseCode> {
        prop_oneof![
            Just(ResponseCode::Approved),
            Just(ResponseCode::Declined),
            Just(ResponseCode::InsufficientFunds),
            Just(ResponseCode::InvalidCard),
            Just(ResponseCode::InvalidTransaction),
            Just(ResponseCode::NotFound),
            Just(ResponseCode::IssuerUnavailable),
            Just(ResponseCode::InProgress),
        ]
    }

    fn state() -> impl Strategy<Value = OpState> {
        prop_oneof![
            Just(OpState::Unknown),
            Just(OpState::Applied),
            Just(OpState::Declined),
            Just(OpState::Reversed),
            Just(OpState::Pending),
            Just(OpState::Captured),
        ]
    }

    fn time() -> impl Strategy<Value = i64> {
        0i64..999_999_999_999_999
    }

    fn line() -> impl Strategy<Value = StatementLine> {
        (bank_ref(), processing(), token(), money(), state(), time()).prop_map(
            |(bank_ref, processing, token, amount, state, at_ms)| StatementLine {
                bank_ref,
                processing,
                token,
                amount,
                state,
                at_ms,
            },
        )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (processing(), bank_ref(), token(), money(), time()).prop_map(
                |(processing, bank_ref, token, amount, at_ms)| Message::FinancialRequest {
                    processing,
                    bank_ref,
                    token,
                    amount,
                    at_ms
                }
            ),
            (processing(), bank_ref(), money(), code()).prop_map(
                |(processing, bank_ref, amount, code)| Message::FinancialResponse {
                    processing,
                    bank_ref,
                    amount,
                    code
                }
            ),
            (bank_ref(), money(), any::<bool>()).prop_map(|(bank_ref, amount, repeat)| {
                Message::ReversalAdvice {
                    bank_ref,
                    amount,
                    repeat,
                }
            }),
            (bank_ref(), code())
                .prop_map(|(bank_ref, code)| Message::ReversalAck { bank_ref, code }),
            (bank_ref(), bank_ref(), money(), any::<bool>()).prop_map(
                |(bank_ref, original, amount, repeat)| Message::CompletionAdvice {
                    bank_ref,
                    original,
                    amount,
                    repeat,
                }
            ),
            (bank_ref(), code())
                .prop_map(|(bank_ref, code)| Message::CompletionAck { bank_ref, code }),
            "[0-9]{8}".prop_map(|date| Message::SettlementRequest { date }),
            (
                "[0-9]{8}",
                any::<bool>(),
                -999_999_999_999i64..=999_999_999_999,
                "[A-Z0-9]{0,40}"
            )
                .prop_map(|(date, paid, cents, reference)| Message::SettlementAdvice {
                    date,
                    paid,
                    amount: Money::from_cents(cents),
                    reference,
                }),
            bank_ref().prop_map(|bank_ref| Message::StatusQuery { bank_ref }),
            (bank_ref(), state(), money()).prop_map(|(bank_ref, state, amount)| {
                Message::StatusReply {
                    bank_ref,
                    state,
                    amount,
                }
            }),
            "[0-9]{8}".prop_map(|date| Message::StatementRequest { date }),
            ("[0-9]{8}", proptest::collection::vec(line(), 0..20))
                .prop_map(|(date, lines)| Message::Statement { date, lines }),
            "[ -~]{0,200}".prop_map(|spec| Message::SetFaults { spec }),
            (any::<bool>(), "[ -~]{0,200}").prop_map(|(ok, text)| Message::FaultsAck { ok, text }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in message()) {
            let bytes = encode(&m).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), m);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn a_damaged_message_is_an_error_or_another_valid_message(
            m in message(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode(&m).unwrap();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(decoded) = decode(&bytes) {
                // Whatever decodes must encode back to the very same bytes.
                prop_assert_eq!(encode(&decoded).unwrap(), bytes.clone());
            }
            bytes.truncate(i);
            prop_assert!(decode(&bytes).is_err());
        }
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        assert_eq!(decode(b""), Err(CodecError::Truncated("message type")));
        assert_eq!(decode(b"0999"), Err(CodecError::UnknownMti("0999".into())));
        let ok = encode(&Message::StatusQuery {
            bank_ref: BankRef::parse("Y0000000000000000042").unwrap(),
        })
        .unwrap();
        let mut trailing = ok.clone();
        trailing.push(b'x');
        assert_eq!(decode(&trailing), Err(CodecError::Trailing(1)));
        // A statement claiming a million lines in a few bytes is refused before allocating.
        assert!(decode(b"0810202611241000000").is_err());
    }

    #[tokio::test]
    async fn frames_carry_messages_and_refuse_oversized_lengths() {
        let m = Message::StatementRequest {
            date: "20261124".into(),
        };
        let mut buffer = Vec::new();
        write_message(&mut buffer, &m).await.unwrap();
        let mut reader = &buffer[..];
        assert_eq!(read_message(&mut reader).await.unwrap(), Some(m));
        assert_eq!(read_message(&mut reader).await.unwrap(), None);
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        let mut reader = &huge[..];
        assert!(matches!(
            read_message(&mut reader).await,
            Err(FrameError::Codec(CodecError::FrameTooLarge(_)))
        ));
    }
}
