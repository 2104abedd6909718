//! libavformat/libavcodec/swscale: open a video by URL, decode it, sample
//! frames and convert each kept one straight to packed RGB at the model's
//! input size in a single swscale pass. Runs on a blocking thread.

use std::time::Instant;

use ffmpeg::{
    Packet, Rational,
    format::Pixel,
    software::scaling::{Context as Scaler, Flags},
    util::frame::Video as VideoFrame,
};
use ffmpeg_next as ffmpeg;
use schema::{Frame, Sampling};
use thiserror::Error;

use crate::{
    prebatch::{Batch, Prebatcher},
    sampler::Sampler,
};

/// Why a video could not be turned into frames. The message names the
/// failing step; the object name is added by the caller.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("cannot open as a video: {0}")]
    Open(#[source] ffmpeg::Error),
    #[error("contains no video stream")]
    NoVideoStream,
    #[error("video codec cannot be decoded: {0}")]
    Codec(#[source] ffmpeg::Error),
    #[error("cannot convert {format:?} {width}x{height} frames: {source}")]
    Scale {
        format: Pixel,
        width: u32,
        height: u32,
        #[source]
        source: ffmpeg::Error,
    },
    #[error("reading the stream failed after {decoded} frames: {source}")]
    Read {
        decoded: u64,
        #[source]
        source: ffmpeg::Error,
    },
    #[error("no frame could be decoded ({errors} packets were rejected by the decoder)")]
    NoFrames { errors: u64 },
    /// The consumer of batches went away (shutdown): not the video's fault.
    #[error("decoding was cancelled")]
    Cancelled,
}

impl DecodeError {
    /// Whether the failure lies outside the video (the store refused or
    /// failed the read, or we are shutting down), so the task deserves a
    /// retry instead of a `failed` status.
    pub fn is_transient(&self) -> bool {
        use ffmpeg::Error as E;
        match self {
            DecodeError::Open(e) | DecodeError::Read { source: e, .. } => matches!(
                e,
                E::HttpUnauthorized | E::HttpForbidden | E::HttpServerError | E::Exit
            ),
            DecodeError::Cancelled => true,
            _ => false,
        }
    }
}

pub struct Settings {
    pub width: u32,
    pub height: u32,
    pub sampling: Sampling,
    pub job_frames: usize,
    pub job_bytes: usize,
}

pub struct Summary {
    pub decoded: u64,
    pub sampled: u64,
    pub decode_errors: u64,
    pub decode_ms: u64,
}

/// Quiets libav's own stderr chatter; errors still reach us as return values.
pub fn init() -> Result<(), ffmpeg::Error> {
    ffmpeg::init()?;
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    Ok(())
}

struct Converter {
    /// Built for the first frame's format and size, rebuilt if they change.
    scaler: Option<(Scaler, (Pixel, u32, u32))>,
    out: VideoFrame,
    packed: Vec<u8>,
    width: u32,
    height: u32,
}

impl Converter {
    fn new(width: u32, height: u32) -> Self {
        Self {
            scaler: None,
            out: VideoFrame::empty(),
            packed: vec![0; (width * height * 3) as usize],
            width,
            height,
        }
    }

    /// Resize + colour conversion in one pass; returns packed RGB24 rows.
    fn convert(&mut self, frame: &VideoFrame) -> Result<&[u8], DecodeError> {
        let input = (frame.format(), frame.width(), frame.height());
        let error = |source| DecodeError::Scale {
            format: input.0,
            width: input.1,
            height: input.2,
            source,
        };
        let scaler = match &mut self.scaler {
            Some((scaler, built_for)) if *built_for == input => scaler,
            slot => {
                let scaler = Scaler::get(
                    input.0,
                    input.1,
                    input.2,
                    Pixel::RGB24,
                    self.width,
                    self.height,
                    Flags::BICUBIC,
                )
                .map_err(error)?;
                &mut slot.insert((scaler, input)).0
            }
        };
        scaler.run(frame, &mut self.out).map_err(error)?;
        let row = self.width as usize * 3;
        let stride = self.out.stride(0);
        let data = self.out.data(0);
        for (y, dst) in self.packed.chunks_exact_mut(row).enumerate() {
            dst.copy_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(&self.packed)
    }
}

/// Decodes `url`, handing each full batch to `emit`. `emit` returning false
/// means the receiver is gone, and decoding stops.
pub fn decode(
    url: &str,
    settings: &Settings,
    mut emit: impl FnMut(Batch) -> bool,
) -> Result<Summary, DecodeError> {
    let started = Instant::now();
    let mut input = ffmpeg::format::input(url).map_err(DecodeError::Open)?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or(DecodeError::NoVideoStream)?;
    let stream_index = stream.index();
    let time_base = stream.time_base();
    let rate = stream.avg_frame_rate();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(DecodeError::Codec)?;

    let frame_bytes = (settings.width * settings.height * 3) as usize;
    let mut batcher = Prebatcher::new(settings.job_frames, settings.job_bytes, frame_bytes);
    let mut sampler = Sampler::new(settings.sampling);
    let mut converter = Converter::new(settings.width, settings.height);
    let mut decoded = 0u64;
    let mut sampled = 0u64;
    let mut errors = 0u64;
    let mut frame = VideoFrame::empty();

    let mut drain = |decoder: &mut ffmpeg::decoder::Video,
                     decoded: &mut u64,
                     sampled: &mut u64|
     -> Result<bool, DecodeError> {
        while decoder.receive_frame(&mut frame).is_ok() {
            let index = *decoded;
            *decoded += 1;
            let pts_s = pts_seconds(frame.timestamp(), time_base, rate, index);
            if !sampler.keep(index, pts_s) {
                continue;
            }
            *sampled += 1;
            let pixels = converter.convert(&frame)?;
            if let Some(batch) = batcher.push(Frame { index, pts_s }, pixels)
                && !emit(batch)
            {
                return Ok(false);
            }
        }
        Ok(true)
    };

    let mut packet = Packet::empty();
    loop {
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            // A demuxer resyncs past one bad packet.
            Err(ffmpeg::Error::InvalidData) => {
                errors += 1;
                continue;
            }
            Err(source) => return Err(DecodeError::Read { decoded, source }),
        }
        if packet.stream() != stream_index {
            continue;
        }
        if decoder.send_packet(&packet).is_err() {
            // A corrupt packet costs its frame, not the video.
            errors += 1;
            continue;
        }
        if !drain(&mut decoder, &mut decoded, &mut sampled)? {
            return Err(DecodeError::Cancelled);
        }
    }
    decoder.send_eof().map_err(DecodeError::Codec)?;
    if !drain(&mut decoder, &mut decoded, &mut sampled)? {
        return Err(DecodeError::Cancelled);
    }
    if decoded == 0 {
        return Err(DecodeError::NoFrames { errors });
    }
    if let Some(batch) = batcher.finish()
        && !emit(batch)
    {
        return Err(DecodeError::Cancelled);
    }
    Ok(Summary {
        decoded,
        sampled,
        decode_errors: errors,
        decode_ms: started.elapsed().as_millis() as u64,
    })
}

/// Presentation time in seconds; streams without timestamps fall back to
/// the frame's position at the nominal rate.
fn pts_seconds(ts: Option<i64>, time_base: Rational, rate: Rational, index: u64) -> f64 {
    match ts {
        Some(ts) if time_base.denominator() != 0 => ts as f64 * f64::from(time_base),
        _ if rate.numerator() > 0 => index as f64 * f64::from(rate.invert()),
        _ => index as f64,
    }
}
