//! Zeroed `f32` buffers that start on a cache line.
//!
//! The allocator aligns large buffers to 16 bytes, so a 64-byte vector
//! load from one straddles two cache lines, which costs a second access.
//! Kernels whose loads are whole vectors (the GEMM's packed weights, the
//! depthwise's input rows) keep what they read in these instead.

use std::ops::{Deref, DerefMut};

/// Bytes per cache line.
const LINE_BYTES: usize = 64;
/// Floats per cache line.
pub(super) const LINE: usize = LINE_BYTES / 4;

#[derive(Debug)]
pub(super) struct Lines {
    /// Holds the values from `buf[start]`, the first on a line.
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Lines {
    pub fn zeroed(len: usize) -> Self {
        let buf = vec![0f32; len + LINE - 1];
        let start = buf.as_ptr().align_offset(LINE_BYTES);
        Self { buf, start, len }
    }
}

impl Deref for Lines {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buf[self.start..][..self.len]
    }
}

impl DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..][..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_on_a_line_and_hold_what_was_asked() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut lines = Lines::zeroed(len);
            assert_eq!(lines.len(), len);
            assert_eq!(lines.as_ptr() as usize % LINE_BYTES, 0, "{len}");
            assert!(lines.iter().all(|&v| v == 0.0));
            lines
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32);
            assert_eq!(lines.last().copied(), len.checked_sub(1).map(|l| l as f32));
        }
    }
}
