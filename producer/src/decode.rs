//! libavformat/libavcodec/swscale: open a video by URL, decode it, sample
//! frames and convert each kept one straight to packed RGB at the model's
//! input size in a single swscale pass. Runs on a blocking thread.

use std::time::Instant;

use ffmpeg::{
    Packet, Rational, format::Pixel, software::scaling::Flags, util::frame::Video as VideoFrame,
};
use ffmpeg_next as ffmpeg;
use schema::{Coverage, Fit, Frame, Sampling};
use thiserror::Error;

use crate::{
    ledger::Ledger,
    orient::Rotation,
    prebatch::{Batch, Prebatcher},
    rescale::Rescaler,
    sampler::{self, Sampler},
    timeline::{Timeline, shortfall},
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
    /// A short, fixed name of the failure, for metrics labels.
    pub fn cause(&self) -> &'static str {
        match self {
            DecodeError::Open(_) => "open",
            DecodeError::NoVideoStream => "no_video_stream",
            DecodeError::Codec(_) => "codec",
            DecodeError::Scale { .. } => "scale",
            DecodeError::Read { .. } => "read",
            DecodeError::NoFrames { .. } => "no_frames",
            DecodeError::Cancelled => "cancelled",
        }
    }

    /// Whether the failure lies outside the video (the store refused or
    /// failed the read, or we are shutting down), so the task deserves a
    /// retry instead of a `failed` status.
    pub fn is_transient(&self) -> bool {
        use ffmpeg::{Error as E, util::error as errno};
        match self {
            DecodeError::Open(e) | DecodeError::Read { source: e, .. } => match e {
                E::HttpUnauthorized | E::HttpForbidden | E::HttpServerError | E::Exit => true,
                // The store went away and libav's own reconnects gave up.
                E::Other { errno } => [
                    errno::ECONNREFUSED,
                    errno::ECONNRESET,
                    errno::ECONNABORTED,
                    errno::ETIMEDOUT,
                    errno::EHOSTUNREACH,
                    errno::ENETUNREACH,
                    errno::ENETDOWN,
                    errno::EPIPE,
                    errno::EIO,
                ]
                .contains(errno),
                _ => false,
            },
            DecodeError::Cancelled => true,
            _ => false,
        }
    }
}

pub struct Settings {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
    pub sampling: Sampling,
    pub job_frames: usize,
    pub job_bytes: usize,
    /// Decoder threads; 0 is libavcodec's choice from the core count.
    pub threads: usize,
    /// Let the decoder drop frames the sampling will not keep (`fps`
    /// sampling: unreferenced frames between sampling instants; keyframes:
    /// every non-intra frame). The producer always does; tests and the
    /// decode bench turn it off to compare against decoding every frame.
    pub skip_unsampled: bool,
    /// A CA libav must trust for an `https://` store beyond the system's.
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct Summary {
    /// Frames the decoder returned: every frame, less those it was let skip.
    pub decoded: u64,
    pub sampled: u64,
    pub decode_ms: u64,
    pub coverage: Coverage,
}

/// Quiets libav's own stderr chatter; errors still reach us as return values.
pub fn init() -> Result<(), ffmpeg::Error> {
    ffmpeg::init()?;
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    Ok(())
}

struct Converter {
    rescaler: Rescaler,
    out: VideoFrame,
    packed: Vec<u8>,
    /// The model's input size, upright.
    width: u32,
    height: u32,
    fit: Fit,
    rotation: Rotation,
}

impl Converter {
    fn new(width: u32, height: u32, fit: Fit, rotation: Rotation) -> Self {
        Self {
            rescaler: Rescaler::new(Pixel::RGB24, Flags::BICUBIC),
            out: VideoFrame::empty(),
            packed: vec![0; (width * height * 3) as usize],
            width,
            height,
            fit,
            rotation,
        }
    }

    /// Resize + colour conversion in one pass (to the fit's scaled size:
    /// the input size for a stretch, shorter side to `short` for a centre
    /// crop), then the centre cut out and the display rotation applied on
    /// the small picture while packing (scaling to the turned size first
    /// is the same picture, at a fraction of the pixels); returns packed
    /// RGB24 rows.
    fn convert(&mut self, frame: &VideoFrame) -> Result<&[u8], DecodeError> {
        // The stored picture's orientation: the model's sides, turned.
        let (crop_w, crop_h) = if self.rotation.swaps_sides() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        };
        let (scaled_w, scaled_h) =
            self.fit
                .scaled_size(frame.width(), frame.height(), crop_w, crop_h);
        self.rescaler
            .run(frame, scaled_w, scaled_h, &mut self.out)?;
        let stride = self.out.stride(0);
        let (x, y) = ((scaled_w - crop_w) / 2, (scaled_h - crop_h) / 2);
        self.rotation.apply(
            &self.out.data(0)[y as usize * stride + x as usize * 3..],
            stride,
            self.width as usize,
            self.height as usize,
            &mut self.packed,
        );
        Ok(&self.packed)
    }
}

/// The stream's decoder with `threads` threads (0: libavcodec's choice).
/// Only the count is set, as the `threads` option: `thread_type` keeps
/// libavcodec's default of frame and slice threading, whichever the codec
/// supports.
fn open_decoder(
    stream: &ffmpeg::format::stream::Stream,
    threads: usize,
) -> Result<ffmpeg::decoder::Video, ffmpeg::Error> {
    let context = ffmpeg::codec::context::Context::from_parameters(stream.parameters())?;
    let codec = ffmpeg::codec::decoder::find(context.id()).ok_or(ffmpeg::Error::DecoderNotFound)?;
    let mut options = ffmpeg::Dictionary::new();
    let count = if threads == 0 {
        "auto".to_owned()
    } else {
        threads.to_string()
    };
    options.set("threads", &count);
    context.decoder().open_as_with(codec, options)?.video()
}

/// Decodes `url`, handing each full batch to `emit`. `emit` returning false
/// means the receiver is gone, and decoding stops.
pub fn decode(
    url: &str,
    settings: &Settings,
    mut emit: impl FnMut(Batch) -> bool,
) -> Result<Summary, DecodeError> {
    let started = Instant::now();
    let mut input =
        ffmpeg::format::input_with_dictionary(url, http_options(settings.ca_file.as_deref()))
            .map_err(DecodeError::Open)?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or(DecodeError::NoVideoStream)?;
    let stream_index = stream.index();
    let declared_s = declared_duration(&input, &stream);
    let mut timeline = timeline(&stream);
    let mut decoder = open_decoder(&stream, settings.threads).map_err(DecodeError::Codec)?;

    let frame_bytes = (settings.width * settings.height * 3) as usize;
    let mut batcher = Prebatcher::new(settings.job_frames, settings.job_bytes, frame_bytes);
    let mut sampler = Sampler::new(settings.sampling);
    let mut ledger =
        (settings.skip_unsampled && sampler::skips(settings.sampling)).then(Ledger::default);
    let time_base = stream.time_base();
    let rotation = stream
        .side_data()
        .find(|d| d.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
        .map_or(Rotation::Upright, |d| {
            Rotation::from_display_matrix(d.data())
        });
    let mut converter = Converter::new(settings.width, settings.height, settings.fit, rotation);
    let mut counts = Counts::default();
    let mut frame = VideoFrame::empty();

    let mut drain = |decoder: &mut ffmpeg::decoder::Video,
                     counts: &mut Counts,
                     mut ledger: Option<&mut Ledger>|
     -> Result<bool, DecodeError> {
        while decoder.receive_frame(&mut frame).is_ok() {
            let index = match ledger.as_deref_mut() {
                Some(ledger) => ledger.index(frame.timestamp()),
                None => counts.decoded,
            };
            counts.decoded += 1;
            metrics::counter!(fleet::metrics::FRAMES_DECODED).increment(1);
            // Damage the decoder concealed (a broken slice painted over) is
            // still damage: the frame is kept, and counted.
            if frame.is_corrupt() || frame.has_decode_errors() {
                counts.errors += 1;
            }
            let pts_s = timeline.next(frame.timestamp());
            if !sampler.keep(index, pts_s, &frame)? {
                continue;
            }
            counts.sampled += 1;
            let pixels = converter.convert(&frame)?;
            if let Some(batch) = batcher.push(Frame { index, pts_s }, pixels)
                && !emit(batch)
            {
                return Ok(false);
            }
        }
        Ok(true)
    };

    loop {
        // A fresh packet each time: `av_read_frame` overwrites the packet
        // it is given without unreferencing it, so reusing one leaked every
        // packet's buffer (the whole bitstream, found by heaptrack); drop
        // unreferences it.
        let mut packet = Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ffmpeg::Error::Eof) => break,
            // A demuxer resyncs past one bad packet.
            Err(ffmpeg::Error::InvalidData) => {
                counts.errors += 1;
                continue;
            }
            Err(source) => {
                return Err(DecodeError::Read {
                    decoded: counts.decoded,
                    source,
                });
            }
        }
        if packet.stream() != stream_index {
            continue;
        }
        if let Some(ledger) = &mut ledger {
            let before = ledger.record(packet.pts());
            let at = |ts: Option<i64>| ts.and_then(|ts| seconds(ts, time_base));
            decoder.skip_frame(sampler::discard(
                settings.sampling,
                at(packet.pts()),
                at(before),
            ));
        }
        if decoder.send_packet(&packet).is_err() {
            // A corrupt packet costs its frame, not the video.
            counts.errors += 1;
            continue;
        }
        if !drain(&mut decoder, &mut counts, ledger.as_mut())? {
            return Err(DecodeError::Cancelled);
        }
    }
    decoder.send_eof().map_err(DecodeError::Codec)?;
    if !drain(&mut decoder, &mut counts, ledger.as_mut())? {
        return Err(DecodeError::Cancelled);
    }
    if counts.decoded == 0 {
        return Err(DecodeError::NoFrames {
            errors: counts.errors,
        });
    }
    if let Some(batch) = batcher.finish()
        && !emit(batch)
    {
        return Err(DecodeError::Cancelled);
    }
    // Frames the decoder skipped still count as covered: the packets say
    // how far the video reaches.
    let covered_s = match ledger.as_ref().and_then(Ledger::last_pts) {
        Some(last) => timeline.covered_to(seconds(last, time_base).unwrap_or(f64::NAN)),
        None => timeline.covered_s(),
    };
    Ok(Summary {
        decoded: counts.decoded,
        sampled: counts.sampled,
        decode_ms: started.elapsed().as_millis() as u64,
        coverage: Coverage {
            decode_errors: counts.errors,
            declared_s,
            covered_s,
            incomplete: shortfall(declared_s, covered_s, timeline.interval(), counts.errors),
        },
    })
}

/// Frames decoded and kept, and the damage met on the way: packets the
/// demuxer or decoder rejected, frames the decoder flagged as concealed.
#[derive(Default)]
struct Counts {
    decoded: u64,
    sampled: u64,
    errors: u64,
}

/// libav's HTTP client options: ride out a store that restarts or drops the
/// connection mid-read (reconnect and resume at the same byte, backing off
/// up to 30 s), give up on one that stalls (no byte for 60 s) instead of
/// hanging the producer, and verify an `https://` store's certificate
/// (libav does not by default) against the system's CAs or `ca_file`.
/// Ignored for local files.
fn http_options(ca_file: Option<&std::path::Path>) -> ffmpeg::Dictionary<'static> {
    let mut options = ffmpeg::Dictionary::new();
    options.set("tls_verify", "1");
    if let Some(path) = ca_file {
        options.set("ca_file", &path.to_string_lossy());
    }
    options.set("reconnect", "1");
    options.set("reconnect_on_network_error", "1");
    options.set("reconnect_on_http_error", "5xx");
    options.set("reconnect_delay_max", "30");
    options.set("rw_timeout", "60000000");
    options
}

fn seconds(ts: i64, time_base: Rational) -> Option<f64> {
    (ts != ffmpeg::ffi::AV_NOPTS_VALUE && time_base.denominator() != 0)
        .then(|| ts as f64 * f64::from(time_base))
}

fn timeline(stream: &ffmpeg::format::stream::Stream) -> Timeline {
    let rate = [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .map_or(f64::NAN, f64::from);
    let time_base = stream.time_base();
    Timeline::new(
        (time_base.denominator() != 0).then(|| f64::from(time_base)),
        rate,
        seconds(stream.start_time(), time_base),
    )
}

/// The video stream's duration as the container declares it: the stream's
/// own duration, else Matroska's per-track `DURATION` tag, else the whole
/// container's duration when the video is its only stream (otherwise that
/// figure may belong to a longer audio track).
fn declared_duration(
    input: &ffmpeg::format::context::Input,
    stream: &ffmpeg::format::stream::Stream,
) -> Option<f64> {
    let positive = |s: f64| (s.is_finite() && s > 0.0).then_some(s);
    seconds(stream.duration(), stream.time_base())
        .and_then(positive)
        .or_else(|| {
            stream
                .metadata()
                .get("DURATION")
                .and_then(parse_clock)
                .and_then(positive)
        })
        .or_else(|| {
            (input.nb_streams() == 1 && input.duration() != ffmpeg::ffi::AV_NOPTS_VALUE)
                .then(|| input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
                .and_then(positive)
        })
}

/// Parses `HH:MM:SS.fraction`, the form of Matroska's `DURATION` tag.
fn parse_clock(text: &str) -> Option<f64> {
    let mut parts = text.trim().splitn(3, ':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

#[cfg(test)]
mod tests {
    use super::parse_clock;

    #[test]
    fn matroska_duration_tags() {
        assert_eq!(parse_clock("00:00:03.000000000"), Some(3.0));
        assert_eq!(parse_clock("01:02:03.5"), Some(3723.5));
        assert_eq!(parse_clock("3.0"), None);
        assert_eq!(parse_clock("aa:00:01"), None);
    }
}
