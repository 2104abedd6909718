//! Frame job payloads: packing the producer's RGB bytes for the wire and
//! unpacking them in the worker (`schema::Payload`).

use image::{ColorType, ImageDecoder, codecs::jpeg::JpegDecoder};
use schema::{FrameJob, Payload};
use thiserror::Error;

/// zstd's fastest levels compress raw RGB frames about as well as the
/// middle ones at a fraction of the cost; the producer packs on its decode
/// thread.
const ZSTD_LEVEL: i32 = 1;

#[derive(Debug, Error)]
pub enum PayloadError {
    #[error("zstd payload does not unpack: {0}")]
    Zstd(#[source] std::io::Error),
    #[error("zstd payload unpacks to {actual} bytes, expected {expected}")]
    Size { expected: usize, actual: usize },
    #[error("frame {frame} cannot be encoded as JPEG: {source}")]
    JpegEncode {
        frame: usize,
        #[source]
        source: jpeg_encoder::EncodingError,
    },
    #[error("JPEG of frame {frame} does not decode: {source}")]
    Jpeg {
        frame: usize,
        #[source]
        source: image::ImageError,
    },
    #[error(
        "JPEG of frame {frame} is {found:?} {width}x{height}, expected Rgb8 {expected_width}x{expected_height}"
    )]
    JpegShape {
        frame: usize,
        found: ColorType,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
}

/// Packed frames: the bytes, and for JPEG each frame's length in them.
pub struct Packed {
    pub bytes: Vec<u8>,
    pub frame_bytes: Vec<u32>,
}

/// Packs `raw`, whole frames of `width`×`height` packed RGB24, as `payload`.
pub fn pack(
    payload: Payload,
    raw: Vec<u8>,
    width: u32,
    height: u32,
) -> Result<Packed, PayloadError> {
    let bytes = match payload {
        Payload::Raw => raw,
        Payload::Zstd => zstd::bulk::compress(&raw, ZSTD_LEVEL).map_err(PayloadError::Zstd)?,
        Payload::Jpeg(quality) => {
            let frame_len = width as usize * height as usize * 3;
            let mut bytes = Vec::new();
            let mut frame_bytes = Vec::with_capacity(raw.len() / frame_len.max(1));
            for (frame, pixels) in raw.chunks_exact(frame_len.max(1)).enumerate() {
                let start = bytes.len();
                // Sides past JPEG's 65,535 are refused by the encoder.
                let side = |s: u32| u16::try_from(s).unwrap_or(0);
                jpeg_encoder::Encoder::new(&mut bytes, quality)
                    .encode(
                        pixels,
                        side(width),
                        side(height),
                        jpeg_encoder::ColorType::Rgb,
                    )
                    .map_err(|source| PayloadError::JpegEncode { frame, source })?;
                frame_bytes.push((bytes.len() - start) as u32);
            }
            return Ok(Packed { bytes, frame_bytes });
        }
    };
    Ok(Packed {
        bytes,
        frame_bytes: Vec::new(),
    })
}

/// Turns a validated job's pixels into raw RGB bytes, in place. Validation
/// bounds what a packed job may unpack to, and unpacking never allocates
/// past it: zstd stops there, and each JPEG's size is read from its header
/// and checked before it is decoded.
pub fn unpack(job: &mut FrameJob) -> Result<(), PayloadError> {
    let (width, height) = (job.width, job.height);
    let frame_len = width as usize * height as usize * 3;
    let expected = frame_len * job.frames.len();
    let raw = match job.payload {
        Payload::Raw => return Ok(()),
        Payload::Zstd => {
            let raw = zstd::bulk::decompress(&job.pixels, expected).map_err(PayloadError::Zstd)?;
            if raw.len() != expected {
                return Err(PayloadError::Size {
                    expected,
                    actual: raw.len(),
                });
            }
            raw
        }
        Payload::Jpeg(_) => {
            let mut raw = vec![0; expected];
            let mut at = 0;
            for (frame, (&size, out)) in job
                .frame_bytes
                .iter()
                .zip(raw.chunks_exact_mut(frame_len.max(1)))
                .enumerate()
            {
                let end = at + size as usize;
                // Validation makes the sizes add up; a job that skipped it
                // is refused, not sliced out of bounds.
                let jpeg = job.pixels.get(at..end).ok_or(PayloadError::Size {
                    expected: end,
                    actual: job.pixels.len(),
                })?;
                at = end;
                let error = |source| PayloadError::Jpeg { frame, source };
                let decoder = JpegDecoder::new(std::io::Cursor::new(jpeg)).map_err(error)?;
                let ((w, h), color) = (decoder.dimensions(), decoder.color_type());
                if (w, h, color) != (width, height, ColorType::Rgb8) {
                    return Err(PayloadError::JpegShape {
                        frame,
                        found: color,
                        width: w,
                        height: h,
                        expected_width: width,
                        expected_height: height,
                    });
                }
                decoder.read_image(out).map_err(error)?;
            }
            raw
        }
    };
    job.pixels = raw;
    job.frame_bytes.clear();
    job.payload = Payload::Raw;
    Ok(())
}

#[cfg(test)]
mod tests {
    use schema::{Frame, ObjectRef};

    use super::*;

    const W: u32 = 16;
    const H: u32 = 8;

    fn job(frames: usize, payload: Payload, packed: Packed) -> FrameJob {
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
            width: W,
            height: H,
            frames: (0..frames as u64)
                .map(|index| Frame {
                    index,
                    pts_s: index as f64,
                })
                .collect(),
            payload,
            pixels: packed.bytes,
            frame_bytes: packed.frame_bytes,
        }
    }

    /// Two frames of smooth gradients, which JPEG keeps closely.
    fn frames() -> Vec<u8> {
        (0..2 * W * H)
            .flat_map(|i| {
                let (x, y) = (i % W, (i / W) % H);
                [
                    (x * 12) as u8,
                    (y * 24) as u8,
                    (100 + i / (W * H) * 50) as u8,
                ]
            })
            .collect()
    }

    #[test]
    fn zstd_round_trips_exactly() -> anyhow::Result<()> {
        let raw = frames();
        let mut packed = job(2, Payload::Zstd, pack(Payload::Zstd, raw.clone(), W, H)?);
        unpack(&mut packed)?;
        assert_eq!((packed.payload, packed.pixels), (Payload::Raw, raw));
        Ok(())
    }

    #[test]
    fn jpeg_round_trips_closely_frame_by_frame() -> anyhow::Result<()> {
        let raw = frames();
        let packed = pack(Payload::Jpeg(95), raw.clone(), W, H)?;
        assert_eq!(packed.frame_bytes.len(), 2);
        let mut job = job(2, Payload::Jpeg(95), packed);
        unpack(&mut job)?;
        assert!(job.frame_bytes.is_empty());
        let worst = raw
            .iter()
            .zip(&job.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .max();
        assert!(
            worst.is_some_and(|d| d <= 12),
            "largest difference {worst:?}"
        );
        Ok(())
    }

    #[test]
    fn wrong_sizes_and_garbage_are_errors() -> anyhow::Result<()> {
        // One frame's bytes declared as two frames.
        let one = frames()[..(W * H * 3) as usize].to_vec();
        let mut short = job(2, Payload::Zstd, pack(Payload::Zstd, one.clone(), W, H)?);
        assert!(matches!(
            unpack(&mut short),
            Err(PayloadError::Size { actual: 384, .. })
        ));
        // More bytes than declared stop at the bound.
        let mut long = job(1, Payload::Zstd, pack(Payload::Zstd, frames(), W, H)?);
        assert!(unpack(&mut long).is_err());
        let garbage = || Packed {
            bytes: b"not a payload".to_vec(),
            frame_bytes: vec![13],
        };
        let mut bad = job(1, Payload::Zstd, garbage());
        bad.frame_bytes.clear();
        assert!(matches!(unpack(&mut bad), Err(PayloadError::Zstd(_))));
        let mut bad = job(1, Payload::Jpeg(90), garbage());
        assert!(matches!(
            unpack(&mut bad),
            Err(PayloadError::Jpeg { frame: 0, .. })
        ));
        // A real JPEG of another size is refused before it is decoded.
        let mut other = job(1, Payload::Jpeg(90), pack(Payload::Jpeg(90), one, W, H)?);
        other.width = W / 2;
        assert!(matches!(
            unpack(&mut other),
            Err(PayloadError::JpegShape { width: 16, .. })
        ));
        Ok(())
    }
}
