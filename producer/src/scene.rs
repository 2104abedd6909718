//! Scene-change scores between consecutive frames, for `scene` sampling.
//!
//! The score is that of ffmpeg's `select` filter (`scene`): the mean
//! absolute difference of the two pictures (MAFD, 0–255), and the score the
//! smaller of it and its change since the previous pair, over 100, so that
//! steady motion (a large but constant difference) does not count as a cut.
//! ffmpeg compares whole frames; this compares 64×64 grey thumbnails (area
//! averages), which costs a fraction of a 1080p decode and averages away
//! sensor noise, so scores read somewhat lower than ffmpeg's on grainy
//! footage.

use ffmpeg::{format::Pixel, software::scaling::Flags, util::frame::Video as VideoFrame};
use ffmpeg_next as ffmpeg;

use crate::{decode::DecodeError, rescale::Rescaler};

const SIDE: u32 = 64;

pub struct SceneChange {
    rescaler: Rescaler,
    thumb: VideoFrame,
    current: Vec<u8>,
    /// The previous frame's thumbnail; empty before the first frame.
    previous: Vec<u8>,
    previous_mafd: f64,
}

impl SceneChange {
    pub fn new() -> Self {
        Self {
            rescaler: Rescaler::new(Pixel::GRAY8, Flags::AREA),
            thumb: VideoFrame::empty(),
            current: Vec::new(),
            previous: Vec::new(),
            previous_mafd: 0.0,
        }
    }

    /// The score of `frame` against the frame before it, in [0, 1]; 1 for
    /// the first frame, which always starts a scene.
    pub fn score(&mut self, frame: &VideoFrame) -> Result<f64, DecodeError> {
        self.rescaler.run(frame, SIDE, SIDE, &mut self.thumb)?;
        let stride = self.thumb.stride(0);
        let data = self.thumb.data(0);
        self.current.clear();
        for row in 0..SIDE as usize {
            self.current
                .extend_from_slice(&data[row * stride..][..SIDE as usize]);
        }
        let score = if self.previous.is_empty() {
            1.0
        } else {
            let (score, mafd) = score(&self.previous, &self.current, self.previous_mafd);
            self.previous_mafd = mafd;
            score
        };
        std::mem::swap(&mut self.previous, &mut self.current);
        Ok(score)
    }
}

/// The score of `current` against `previous` (equal-sized grey pictures)
/// and their MAFD, given the MAFD of the pair before.
fn score(previous: &[u8], current: &[u8], previous_mafd: f64) -> (f64, f64) {
    let sad: u64 = previous
        .iter()
        .zip(current)
        .map(|(&a, &b)| u64::from(a.abs_diff(b)))
        .sum();
    let mafd = sad as f64 / current.len().max(1) as f64;
    let change = (mafd - previous_mafd).abs();
    ((mafd.min(change) / 100.0).clamp(0.0, 1.0), mafd)
}

#[cfg(test)]
mod tests {
    use super::score;

    #[test]
    fn a_cut_scores_high_and_steady_change_low() {
        let dark = vec![20u8; 64];
        let bright = vec![200u8; 64];
        // A cut after a still shot: MAFD 180, up from 0.
        assert_eq!(score(&dark, &bright, 0.0), (1.0, 180.0));
        // A still shot.
        assert_eq!(score(&dark, &dark, 0.0), (0.0, 0.0));
        // Steady motion: a large difference, but the same as the pair
        // before, is no cut.
        let shifted: Vec<u8> = dark.iter().map(|v| v + 50).collect();
        let (steady, mafd) = score(&dark, &shifted, 50.0);
        assert_eq!((steady, mafd), (0.0, 50.0));
        // A change half-way: MAFD 50 after 10 scores (50 - 10) / 100.
        assert!((score(&dark, &shifted, 10.0).0 - 0.4).abs() < 1e-12);
    }
}
