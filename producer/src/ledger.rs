//! Frame positions and coverage from the container's packets, for when the
//! decoder is told to drop frames the sampler will not keep. The frames it
//! returns then no longer count the video's frames; the packets still do,
//! one per frame, and their timestamps say where each returned frame stands.

use std::collections::BTreeMap;

/// Packets further back than this are certainly shown before the next frame
/// the decoder returns: a decoder returns frames a few dozen packets behind
/// the demuxer at most (reorder depth, frame threads), and in keyframe mode
/// a whole GOP behind, whose packets are all shown before the next keyframe.
/// Folding older ones into the count keeps memory bounded on a video with
/// one keyframe in an hour.
const PENDING_MAX: usize = 4096;

/// Timestamps are in the stream's time base.
#[derive(Default)]
pub struct Ledger {
    /// Timestamps of recorded packets not yet passed by a returned frame,
    /// with their multiplicity (broken muxers repeat them).
    pending: BTreeMap<i64, u64>,
    /// Packets shown before the last returned frame, and packets without a
    /// timestamp (counted as shown in the order read).
    passed: u64,
    /// The latest timestamp among the passed packets.
    latest_passed: Option<i64>,
    /// The timestamp of the last returned frame that had one.
    returned: Option<i64>,
    last_index: Option<u64>,
    /// The latest timestamp of any packet.
    last_pts: Option<i64>,
}

impl Ledger {
    /// Records a packet on its way to the decoder; returns the timestamp of
    /// the latest recorded packet shown before it, if there is one and it
    /// is certain that no later-shown one was recorded before.
    pub fn record(&mut self, pts: Option<i64>) -> Option<i64> {
        let Some(pts) = pts else {
            self.passed += 1;
            return None;
        };
        self.last_pts = Some(self.last_pts.map_or(pts, |last| last.max(pts)));
        let before = match self.returned {
            // Shown no later than a frame already returned: out of the
            // decoder's order, so nothing is known about it.
            Some(returned) if pts <= returned => None,
            _ => self
                .pending
                .range(..pts)
                .next_back()
                .map(|(&t, _)| t)
                .or(self.latest_passed),
        };
        *self.pending.entry(pts).or_default() += 1;
        if self.pending.len() > PENDING_MAX
            && let Some((t, n)) = self.pending.pop_first()
        {
            self.pass(t, n);
        }
        before
    }

    /// The position of a returned frame shown at `ts`: the number of
    /// recorded packets shown before it. Strictly increasing from frame to
    /// frame, whatever the timestamps.
    pub fn index(&mut self, ts: Option<i64>) -> u64 {
        if let Some(ts) = ts {
            while let Some(entry) = self.pending.first_entry()
                && *entry.key() < ts
            {
                let (t, n) = entry.remove_entry();
                self.pass(t, n);
            }
            self.returned = Some(self.returned.map_or(ts, |r| r.max(ts)));
        }
        let index = match self.last_index {
            Some(last) => self.passed.max(last + 1),
            None => self.passed,
        };
        self.last_index = Some(index);
        index
    }

    /// The latest timestamp of any recorded packet, returned or not.
    pub fn last_pts(&self) -> Option<i64> {
        self.last_pts
    }

    fn pass(&mut self, t: i64, n: u64) {
        self.passed += n;
        self.latest_passed = Some(self.latest_passed.map_or(t, |p| p.max(t)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's usual shape, in decode order: I0 P4 B2 b1 b3 P8 B6 b5 b7,
    /// with the decoder returning only I0, P4, B2, P8, B6 (b: dropped).
    #[test]
    fn returned_frames_get_their_presentation_position() {
        let mut l = Ledger::default();
        let decode_order = [0, 4, 2, 1, 3, 8, 6, 5, 7];
        let before: Vec<_> = decode_order.iter().map(|&t| l.record(Some(t))).collect();
        assert_eq!(
            before,
            [
                None,
                Some(0),
                Some(0),
                Some(0),
                Some(2),
                Some(4),
                Some(4),
                Some(4),
                Some(6)
            ]
        );
        let indices: Vec<_> = [0, 2, 4, 6, 8].map(|t| l.index(Some(t))).to_vec();
        assert_eq!(indices, [0, 2, 4, 6, 8]);
        assert_eq!(l.last_pts(), Some(8));
    }

    #[test]
    fn packets_behind_a_returned_frame_have_no_known_predecessor() {
        let mut l = Ledger::default();
        l.record(Some(0));
        l.record(Some(5));
        assert_eq!(l.index(Some(5)), 1);
        // A packet shown before frame 5 arrives late.
        assert_eq!(l.record(Some(3)), None);
        assert_eq!(l.record(Some(6)), Some(5));
    }

    #[test]
    fn indices_increase_without_timestamps_or_with_repeats() {
        let mut l = Ledger::default();
        l.record(None);
        l.record(Some(1));
        l.record(Some(1));
        assert_eq!([l.index(None), l.index(Some(1)), l.index(None)], [1, 2, 3]);
    }

    #[test]
    fn memory_stays_bounded_on_an_endless_gop() {
        let mut l = Ledger::default();
        for t in 0..20_000 {
            l.record(Some(t));
        }
        assert_eq!(l.pending.len(), PENDING_MAX);
        assert_eq!(l.index(Some(20_000)), 20_000);
    }
}
