//! Frame job payloads: packing the producer's RGB bytes for the wire and
//! unpacking them in the worker (`schema::Payload`).

use schema::{FrameJob, Payload};
use thiserror::Error;

/// zstd's fastest levels compress raw RGB frames about as well as the
/// middle ones (3–4× on a static camera, measured in BENCHMARKS.md) at a
/// fraction of the cost; the producer packs on its decode thread.
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Error)]
pub enum PayloadError {
    #[error("zstd payload does not unpack: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("zstd payload unpacks to {actual} bytes, expected {expected}")]
    Size { expected: usize, actual: usize },
}

/// Packs raw RGB bytes as `payload`.
pub fn pack(payload: Payload, raw: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match payload {
        Payload::Raw => Ok(raw),
        Payload::Zstd => zstd::bulk::compress(&raw, ZSTD_LEVEL),
    }
}

/// Turns a validated job's pixels into raw RGB bytes, in place. Validation
/// bounds what a compressed job may unpack to, and unpacking stops there.
pub fn unpack(job: &mut FrameJob) -> Result<(), PayloadError> {
    if job.payload == Payload::Raw {
        return Ok(());
    }
    let expected = job.width as usize * job.height as usize * 3 * job.frames.len();
    let raw = zstd::bulk::decompress(&job.pixels, expected).map_err(PayloadError::Zstd)?;
    if raw.len() != expected {
        return Err(PayloadError::Size {
            expected,
            actual: raw.len(),
        });
    }
    job.pixels = raw;
    job.payload = Payload::Raw;
    Ok(())
}

#[cfg(test)]
mod tests {
    use schema::{Frame, ObjectRef};

    use super::*;

    fn job(frames: usize, payload: Payload, pixels: Vec<u8>) -> FrameJob {
        let object = ObjectRef {
            bucket: "b".into(),
            key: "k".into(),
        };
        FrameJob {
            video_id: uuid::Uuid::nil(),
            task: "embed.effnet-lite0".into(),
            source: object.clone(),
            output: object,
            seq: 0,
            width: 4,
            height: 2,
            frames: (0..frames as u64)
                .map(|index| Frame {
                    index,
                    pts_s: index as f64,
                })
                .collect(),
            payload,
            pixels,
        }
    }

    #[test]
    fn zstd_round_trips_exactly() -> anyhow::Result<()> {
        let raw: Vec<u8> = (0..2 * 4 * 2 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut packed = job(2, Payload::Zstd, pack(Payload::Zstd, raw.clone())?);
        unpack(&mut packed)?;
        assert_eq!((packed.payload, packed.pixels), (Payload::Raw, raw));
        Ok(())
    }

    #[test]
    fn wrong_sizes_and_garbage_are_errors() -> anyhow::Result<()> {
        // One frame's bytes declared as two frames.
        let mut short = job(2, Payload::Zstd, pack(Payload::Zstd, vec![9; 24])?);
        assert!(matches!(
            unpack(&mut short),
            Err(PayloadError::Size {
                expected: 48,
                actual: 24
            })
        ));
        // More bytes than declared stop at the bound.
        let mut long = job(1, Payload::Zstd, pack(Payload::Zstd, vec![9; 1 << 20])?);
        assert!(unpack(&mut long).is_err());
        let mut garbage = job(1, Payload::Zstd, b"not zstd at all".to_vec());
        assert!(matches!(unpack(&mut garbage), Err(PayloadError::Zstd(_))));
        Ok(())
    }
}
