//! Frame times and how much of the video they cover.
//!
//! Containers lie about time in ordinary ways: AVI packets mostly carry no
//! pts, a decoder flushed at end of stream may repeat the last guess, and
//! broken muxers write pts that step backwards. Everything downstream
//! (fps sampling, WebVTT cues, `frames.json`) needs strictly increasing
//! times, so the timeline repairs them here, once.

/// Frame interval assumed when the stream declares no rate at all.
const FALLBACK_INTERVAL_S: f64 = 1.0 / 25.0;

/// Assigns each decoded frame, in presentation order, a strictly
/// increasing time in seconds.
pub struct Timeline {
    /// Seconds per unit of the stream's timestamps; `None` if the stream has
    /// no usable time base.
    time_base: Option<f64>,
    /// Seconds between frames at the stream's nominal rate.
    interval: f64,
    /// Where the stream starts, if the container says.
    start: Option<f64>,
    first: Option<f64>,
    last: Option<f64>,
}

impl Timeline {
    /// `rate` is the nominal frame rate in frames/s (≤ 0 or NaN if unknown).
    pub fn new(time_base: Option<f64>, rate: f64, start: Option<f64>) -> Self {
        let interval = if rate.is_finite() && rate > 0.0 {
            1.0 / rate
        } else {
            FALLBACK_INTERVAL_S
        };
        Self {
            time_base: time_base.filter(|tb| tb.is_finite() && *tb > 0.0),
            interval,
            start: start.filter(|s| s.is_finite()),
            first: None,
            last: None,
        }
    }

    /// The time of the next frame: its own timestamp when it has one that
    /// moves forward, else one nominal interval after the previous frame.
    pub fn next(&mut self, ts: Option<i64>) -> f64 {
        let own = ts
            .zip(self.time_base)
            .map(|(ts, tb)| ts as f64 * tb)
            .filter(|t| t.is_finite());
        let pts = match (own, self.last) {
            (Some(t), Some(last)) if t > last => t,
            (_, Some(last)) => last + self.interval,
            (Some(t), None) => t,
            (None, None) => self.start.unwrap_or(0.0),
        };
        self.first.get_or_insert(pts);
        self.last = Some(pts);
        pts
    }

    pub fn interval(&self) -> f64 {
        self.interval
    }

    /// Seconds from the stream's start to the end of the last frame (which
    /// lasts one nominal interval); 0 before any frame.
    pub fn covered_s(&self) -> f64 {
        self.covered_to(f64::NEG_INFINITY)
    }

    /// As `covered_s`, when a frame the decoder skipped was shown at
    /// `shown_s`, possibly after the last frame it returned.
    pub fn covered_to(&self, shown_s: f64) -> f64 {
        match (self.first, self.last) {
            (Some(first), Some(last)) => {
                last.max(shown_s) + self.interval - self.start.unwrap_or(first)
            }
            _ => 0.0,
        }
    }
}

/// Whether the decoded frames cover the video, and if not, why not.
///
/// The rule: a video is incomplete when packets were corrupt (rejected, so
/// their frames are missing, or concealed by the decoder), or when the container declares the video stream's
/// duration and the decoded frames end more than `max(3 frame intervals,
/// 0.25 s)` before it. A stream that legitimately ends early (a video track
/// shorter than its audio) is judged by the video stream's own declared
/// duration, never by the container's overall one unless the video is the
/// only stream; with no declaration there is nothing to hold it against, and
/// it counts as complete. The tolerance absorbs rounding of container
/// durations and the last frame's length, while a cut of even a second is
/// caught.
pub fn shortfall(
    declared_s: Option<f64>,
    covered_s: f64,
    interval: f64,
    decode_errors: u64,
) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some(declared) = declared_s.filter(|d| d.is_finite() && *d > 0.0) {
        let tolerance = (3.0 * interval).max(0.25);
        if covered_s + tolerance < declared {
            reasons.push(format!(
                "truncated: frames cover {covered_s:.3} s of the {declared:.3} s the container declares"
            ));
        }
    }
    if decode_errors > 0 {
        reasons.push(format!(
            "{decode_errors} corrupt packets or damaged frames (skipped, or concealed by the decoder)"
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_timestamps_are_kept_when_they_move_forward() {
        let mut t = Timeline::new(Some(0.5), 2.0, Some(0.0));
        assert_eq!(
            [t.next(Some(0)), t.next(Some(1)), t.next(Some(4))],
            [0.0, 0.5, 2.0]
        );
        assert_eq!(t.covered_s(), 2.5);
        // Frames skipped after the last one returned still count.
        assert_eq!(t.covered_to(3.0), 3.5);
        assert_eq!(t.covered_to(1.0), 2.5);
    }

    #[test]
    fn missing_and_repeated_timestamps_step_one_interval() {
        // The AVI case: the flushed last frame repeats (or lacks) a pts.
        let mut t = Timeline::new(Some(0.1), 10.0, None);
        let times = [
            t.next(Some(0)),
            t.next(None),
            t.next(Some(1)),
            t.next(Some(1)),
            t.next(Some(0)),
        ];
        assert_eq!(times, [0.0, 0.1, 0.2, 0.30000000000000004, 0.4]);
        assert!(times.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn no_time_base_or_rate_still_increases() {
        let mut t = Timeline::new(None, f64::NAN, None);
        assert_eq!(
            [t.next(Some(7)), t.next(Some(8))],
            [0.0, FALLBACK_INTERVAL_S]
        );
        assert_eq!(t.interval(), FALLBACK_INTERVAL_S);
    }

    #[test]
    fn shortfall_rule() {
        let frame = 0.04;
        // Complete within tolerance, or nothing declared.
        assert_eq!(shortfall(Some(3.0), 2.92, frame, 0), None);
        assert_eq!(shortfall(None, 1.0, frame, 0), None);
        // A cut second is caught; corrupt packets are reported too.
        let cut = shortfall(Some(3.0), 1.96, frame, 0).expect("truncated");
        assert!(cut.contains("1.960 s of the 3.000 s"), "{cut}");
        let both = shortfall(Some(3.0), 0.96, frame, 2).expect("both");
        assert!(
            both.contains("truncated") && both.contains("2 corrupt packets"),
            "{both}"
        );
        // Slow streams get three frame intervals of slack.
        assert_eq!(shortfall(Some(10.0), 8.6, 0.5, 0), None);
    }
}
