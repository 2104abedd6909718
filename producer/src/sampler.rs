//! Which decoded frames are kept, and which frames the decoder may skip
//! because they would not be kept.

use ffmpeg::{codec::discard::Discard, picture, util::frame::Video as VideoFrame};
use ffmpeg_next as ffmpeg;
use schema::Sampling;

use crate::{decode::DecodeError, scene::SceneChange};

pub struct Sampler {
    rule: Sampling,
    /// For `Fps`: index of the next sampling instant (instant k = k / fps).
    next_instant: u64,
    /// For `Scene`; builds nothing until its first frame.
    scene: SceneChange,
}

impl Sampler {
    pub fn new(rule: Sampling) -> Self {
        Self {
            rule,
            next_instant: 0,
            scene: SceneChange::new(),
        }
    }

    /// Decides for `frame`, at position `index`, shown at `pts_s`. Frames
    /// must arrive in presentation order.
    pub fn keep(
        &mut self,
        index: u64,
        pts_s: f64,
        frame: &VideoFrame,
    ) -> Result<bool, DecodeError> {
        Ok(match self.rule {
            Sampling::All => true,
            Sampling::EveryNth(n) => index.is_multiple_of(u64::from(n.max(1))),
            Sampling::Fps(fps) => {
                let position = position(pts_s, fps);
                if position < self.next_instant as f64 {
                    return Ok(false);
                }
                // One frame serves every instant it covers: a 1 fps sample
                // of a 0.5 fps video keeps every frame, never duplicates.
                self.next_instant = position.floor() as u64 + 1;
                true
            }
            Sampling::Keyframes => frame.kind() == picture::Type::I,
            Sampling::Scene(threshold) => self.scene.score(frame)? > threshold,
        })
    }
}

/// Whether `rule` lets the decoder drop frames (`discard`); the frames'
/// positions must then come from the packets (`Ledger`).
pub fn skips(rule: Sampling) -> bool {
    matches!(rule, Sampling::Fps(_) | Sampling::Keyframes)
}

/// What the decoder may drop of the frame in a packet shown at `pts_s`,
/// when the latest packet known to be shown before it is at
/// `before_s`, with no certainty that none lies between them.
///
/// `Fps` keeps a frame iff a sampling instant falls after the frame
/// shown before it and no later than itself. If none falls in
/// (`before_s`, `pts_s`], none falls in the smaller interval from the
/// true predecessor either, so the frame will not be kept, and if
/// nothing refers to it, it need not be decoded: the frames `keep` then
/// sees are a subset of the full sequence holding every frame it keeps,
/// and its choices are the same.
pub fn discard(rule: Sampling, pts_s: Option<f64>, before_s: Option<f64>) -> Discard {
    match (rule, pts_s, before_s) {
        (Sampling::Keyframes, ..) => Discard::NonKey,
        (Sampling::Fps(fps), Some(pts), Some(before))
            if before < pts && position(before, fps).floor() == position(pts, fps).floor() =>
        {
            Discard::NonReference
        }
        _ => Discard::Default,
    }
}

/// Where `pts_s` falls among the sampling instants, tolerating float noise
/// in pts (e.g. 0.9999999 for 1.0).
fn position(pts_s: f64, fps: f64) -> f64 {
    pts_s.max(0.0) * fps + 1e-6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(rule: Sampling, fps_in: f64, n: u64) -> Vec<u64> {
        let mut s = Sampler::new(rule);
        let frame = VideoFrame::empty();
        (0..n)
            .filter(|&i| s.keep(i, i as f64 / fps_in, &frame).expect("no scaling"))
            .collect()
    }

    #[test]
    fn every_nth_keeps_multiples() {
        assert_eq!(kept(Sampling::EveryNth(3), 25.0, 10), [0, 3, 6, 9]);
    }

    #[test]
    fn fps_keeps_the_first_frame_of_each_interval() {
        // 25 fps video sampled at 2 fps: instants 0, 0.5, 1.0, 1.5 s.
        assert_eq!(kept(Sampling::Fps(2.0), 25.0, 50), [0, 13, 25, 38]);
        // 30000/1001 fps video sampled at 1 fps.
        let ntsc = 30000.0 / 1001.0;
        assert_eq!(kept(Sampling::Fps(1.0), ntsc, 91), [0, 30, 60, 90]);
    }

    #[test]
    fn fps_above_the_source_rate_keeps_every_frame_once() {
        assert_eq!(kept(Sampling::Fps(50.0), 10.0, 5), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn fps_skips_only_frames_it_would_not_keep() {
        let rule = Sampling::Fps(2.0);
        let t = |i: u64| Some(i as f64 / 25.0);
        // Every frame of a 25 fps video, told its true predecessor: the
        // ones not skipped are exactly the ones kept.
        let decoded: Vec<u64> = (0..50)
            .filter(|&i| discard(rule, t(i), i.checked_sub(1).and_then(t)) != Discard::NonReference)
            .collect();
        assert_eq!(decoded, [0, 13, 25, 38]);
        // Told an earlier frame than the true predecessor, it skips less,
        // never more.
        assert_eq!(discard(rule, t(20), t(19)), Discard::NonReference);
        assert_eq!(discard(rule, t(20), t(14)), Discard::NonReference);
        assert_eq!(discard(rule, t(13), t(10)), Discard::Default);
        // Nothing known: decode it.
        assert_eq!(discard(rule, t(20), None), Discard::Default);
        assert_eq!(discard(rule, None, t(3)), Discard::Default);
    }

    #[test]
    fn only_fps_and_keyframes_skip() {
        for rule in [Sampling::All, Sampling::EveryNth(5), Sampling::Scene(0.4)] {
            assert!(!skips(rule));
            assert_eq!(discard(rule, Some(1.0), Some(0.9)), Discard::Default);
        }
        assert!(skips(Sampling::Keyframes));
        assert!(skips(Sampling::Fps(1.0)));
    }
}
