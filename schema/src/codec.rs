use thiserror::Error;

use crate::{Limits, Message, ValidationError, legacy};

/// First bytes of every Framefleet payload.
pub const MAGIC: [u8; 2] = *b"FF";
/// Wire version this build writes. Bump it with any change to `Message` or
/// a type inside it, and keep reading the previous one (`legacy`) for as
/// long as a rolling upgrade can leave it in queues and stored parts.
pub const VERSION: u16 = 5;

const HEADER: usize = MAGIC.len() + 2;
// bincode refuses to allocate past this; one byte over our own message limit.
const BINCODE_LIMIT: usize = 16 * 1024 * 1024 + 1;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("message is invalid")]
    Invalid(#[from] ValidationError),
    #[error("bincode could not encode the message")]
    Bincode(#[from] bincode::error::EncodeError),
}

/// Why a payload could not be turned into a `Message`.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is too short for the header")]
    TooShort(usize),
    #[error("payload does not start with the framefleet magic")]
    BadMagic,
    /// Written by a different build: not corrupt, but not ours to read.
    #[error(
        "wire version {found} is not supported (this build reads {} to {VERSION})",
        legacy::V3
    )]
    UnsupportedVersion { found: u16 },
    #[error("payload of {size} bytes exceeds the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("payload body is corrupt")]
    Corrupt(#[source] bincode::error::DecodeError),
    #[error("payload has {0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("message is invalid")]
    Invalid(#[from] ValidationError),
}

impl DecodeError {
    /// A short, fixed name of the kind of error, for metrics labels.
    pub fn cause(&self) -> &'static str {
        match self {
            DecodeError::TooShort(_) => "too_short",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Corrupt(_) => "corrupt",
            DecodeError::TrailingBytes(_) => "trailing_bytes",
            DecodeError::Invalid(_) => "invalid",
        }
    }
}

/// Validates and encodes a message with the current version tag.
pub fn encode(message: &Message) -> Result<Vec<u8>, EncodeError> {
    message.validate(&Limits::DEFAULT)?;
    let mut out = Vec::with_capacity(HEADER + message.size_hint());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(message, &mut out, config())?;
    Ok(out)
}

/// Decodes and validates a payload. Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let limits = Limits::DEFAULT;
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_bytes,
        });
    }
    if bytes.len() < HEADER {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let body = &bytes[HEADER..];
    let (message, used) = match u16::from_le_bytes([bytes[2], bytes[3]]) {
        VERSION => bincode::serde::decode_from_slice::<Message, _>(body, config()),
        legacy::V4 => bincode::serde::decode_from_slice::<legacy::MessageV4, _>(body, config())
            .map(|(m, used)| (m.into(), used)),
        legacy::V3 => bincode::serde::decode_from_slice::<legacy::MessageV3, _>(body, config())
            .map(|(m, used)| (m.into(), used)),
        found => return Err(DecodeError::UnsupportedVersion { found }),
    }
    .map_err(DecodeError::Corrupt)?;
    let trailing = bytes.len() - HEADER - used;
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes(trailing));
    }
    message.validate(&limits)?;
    Ok(message)
}
