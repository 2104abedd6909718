//! Groups sampled frames into jobs bounded by frame count and bytes.

use schema::Frame;

/// One job's worth of frames, ready to wrap in a `FrameJob`.
pub struct Batch {
    pub frames: Vec<Frame>,
    pub pixels: Vec<u8>,
}

pub struct Prebatcher {
    max_frames: usize,
    frame_bytes: usize,
    current: Batch,
}

impl Prebatcher {
    /// `max_bytes` caps the pixel payload; a job always holds at least one frame.
    pub fn new(max_frames: usize, max_bytes: usize, frame_bytes: usize) -> Self {
        let max_frames = max_frames.min(max_bytes / frame_bytes.max(1)).max(1);
        Self {
            max_frames,
            frame_bytes,
            current: Self::empty(max_frames, frame_bytes),
        }
    }

    fn empty(max_frames: usize, frame_bytes: usize) -> Batch {
        Batch {
            frames: Vec::with_capacity(max_frames),
            pixels: Vec::with_capacity(max_frames * frame_bytes),
        }
    }

    /// Adds a frame; returns a full batch when this frame completes one.
    pub fn push(&mut self, frame: Frame, pixels: &[u8]) -> Option<Batch> {
        self.current.frames.push(frame);
        self.current.pixels.extend_from_slice(pixels);
        (self.current.frames.len() >= self.max_frames).then(|| self.take())
    }

    /// The last, partial batch, if any frame is pending.
    pub fn finish(mut self) -> Option<Batch> {
        (!self.current.frames.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Batch {
        std::mem::replace(
            &mut self.current,
            Self::empty(self.max_frames, self.frame_bytes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> Frame {
        Frame {
            index: i,
            pts_s: i as f64,
        }
    }

    #[test]
    fn bytes_bound_the_batch_before_the_frame_count_does() {
        // 100-byte frames, 350-byte budget: 3 frames per job even though 32 are allowed.
        let mut p = Prebatcher::new(32, 350, 100);
        let full: Vec<_> = (0..7).filter_map(|i| p.push(frame(i), &[0; 100])).collect();
        assert_eq!(full.len(), 2);
        assert!(
            full.iter()
                .all(|b| b.frames.len() == 3 && b.pixels.len() == 300)
        );
        let last = p.finish().expect("one frame pending");
        assert_eq!(last.frames, [frame(6)]);
    }

    #[test]
    fn a_frame_larger_than_the_budget_still_travels_alone() {
        let mut p = Prebatcher::new(32, 10, 100);
        assert!(p.push(frame(0), &[0; 100]).is_some());
        assert!(p.finish().is_none());
    }
}
