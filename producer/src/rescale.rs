//! A swscale context for one kind of output, rebuilt when the decoded
//! frames change format or size mid-stream (resolution switches in adaptive
//! streams, a spliced file).

use ffmpeg::{
    format::Pixel,
    software::scaling::{Context as Scaler, Flags},
    util::frame::Video as VideoFrame,
};
use ffmpeg_next as ffmpeg;

use crate::decode::DecodeError;

pub struct Rescaler {
    format: Pixel,
    flags: Flags,
    /// The context and the input (format, width, height) it was built for.
    built: Option<(Scaler, (Pixel, u32, u32))>,
}

impl Rescaler {
    pub fn new(format: Pixel, flags: Flags) -> Self {
        Self {
            format,
            flags,
            built: None,
        }
    }

    /// Converts `frame` into `out` at `width`×`height`. The output size must
    /// be a function of the input's, as it is for every caller: the context
    /// is reused for as long as the input stays the same.
    pub fn run(
        &mut self,
        frame: &VideoFrame,
        width: u32,
        height: u32,
        out: &mut VideoFrame,
    ) -> Result<(), DecodeError> {
        let input = (frame.format(), frame.width(), frame.height());
        let error = |source| DecodeError::Scale {
            format: input.0,
            width: input.1,
            height: input.2,
            source,
        };
        let scaler = match &mut self.built {
            Some((scaler, built_for)) if *built_for == input => scaler,
            slot => {
                let scaler = Scaler::get(
                    input.0,
                    input.1,
                    input.2,
                    self.format,
                    width,
                    height,
                    self.flags,
                )
                .map_err(error)?;
                &mut slot.insert((scaler, input)).0
            }
        };
        scaler.run(frame, out).map_err(error)
    }
}
