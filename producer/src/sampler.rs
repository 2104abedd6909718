//! Which decoded frames are kept.

use schema::Sampling;

pub struct Sampler {
    rule: Sampling,
    /// For `Fps`: index of the next sampling instant (instant k = k / fps).
    next_instant: u64,
}

impl Sampler {
    pub fn new(rule: Sampling) -> Self {
        Self {
            rule,
            next_instant: 0,
        }
    }

    /// Decides for the frame at decode position `index` shown at `pts_s`.
    /// Frames must arrive in presentation order.
    pub fn keep(&mut self, index: u64, pts_s: f64) -> bool {
        match self.rule {
            Sampling::All => true,
            Sampling::EveryNth(n) => index.is_multiple_of(u64::from(n.max(1))),
            Sampling::Fps(fps) => {
                // Tolerate float noise in pts (e.g. 0.9999999 for 1.0).
                let position = pts_s.max(0.0) * fps + 1e-6;
                if position < self.next_instant as f64 {
                    return false;
                }
                // One frame serves every instant it covers: a 1 fps sample
                // of a 0.5 fps video keeps every frame, never duplicates.
                self.next_instant = position.floor() as u64 + 1;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(rule: Sampling, fps_in: f64, n: u64) -> Vec<u64> {
        let mut s = Sampler::new(rule);
        (0..n).filter(|&i| s.keep(i, i as f64 / fps_in)).collect()
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
}
