//! Display rotation. Phones store frames as the sensor saw them and a
//! display matrix saying how to turn them for viewing; players, and the
//! ffmpeg CLI, apply it. So do we, or a model would see a portrait video
//! lying on its side. Mirroring matrices are rare and left alone, as
//! ffmpeg 5.1's CLI does.

/// How a decoded frame must be turned to be shown upright.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rotation {
    #[default]
    Upright,
    Clockwise,
    HalfTurn,
    CounterClockwise,
}

impl Rotation {
    /// From libav's display matrix side data: nine native-endian i32, a
    /// 3×3 matrix in 16.16 fixed point. Anything else is upright.
    pub fn from_display_matrix(bytes: &[u8]) -> Rotation {
        let m: Vec<f64> = bytes
            .chunks_exact(4)
            .map(|c| f64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])) / 65536.0)
            .collect();
        if m.len() != 9 {
            return Rotation::Upright;
        }
        let (sx, sy) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
        if sx == 0.0 || sy == 0.0 {
            return Rotation::Upright;
        }
        // av_display_rotation_get() is minus this angle, and the CLI turns
        // the picture by minus that: clockwise by this many degrees.
        let degrees = (m[1] / sy).atan2(m[0] / sx).to_degrees().round();
        match degrees.rem_euclid(360.0) as u32 {
            90 => Rotation::Clockwise,
            180 => Rotation::HalfTurn,
            270 => Rotation::CounterClockwise,
            _ => Rotation::Upright,
        }
    }

    /// Whether a quarter turn swaps width and height.
    pub fn swaps_sides(self) -> bool {
        matches!(self, Rotation::Clockwise | Rotation::CounterClockwise)
    }

    /// Writes the `width`×`height` upright picture into `out` (packed RGB24)
    /// from the stored picture `src` (RGB24 rows of `stride` bytes), which
    /// is `height`×`width` for a quarter turn.
    pub fn apply(self, src: &[u8], stride: usize, width: usize, height: usize, out: &mut [u8]) {
        if self == Rotation::Upright {
            for (y, row) in out.chunks_exact_mut(width * 3).take(height).enumerate() {
                row.copy_from_slice(&src[y * stride..y * stride + width * 3]);
            }
            return;
        }
        let (src_w, src_h) = if self.swaps_sides() {
            (height, width)
        } else {
            (width, height)
        };
        for (y, row) in out.chunks_exact_mut(width * 3).take(height).enumerate() {
            for (x, px) in row.chunks_exact_mut(3).enumerate() {
                let (sx, sy) = match self {
                    Rotation::Upright => (x, y),
                    Rotation::Clockwise => (y, src_h - 1 - x),
                    Rotation::HalfTurn => (src_w - 1 - x, src_h - 1 - y),
                    Rotation::CounterClockwise => (src_w - 1 - y, x),
                };
                let at = sy * stride + sx * 3;
                px.copy_from_slice(&src[at..at + 3]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rotation;

    fn matrix(a: i32, b: i32, c: i32, d: i32) -> Vec<u8> {
        [a, b, 0, c, d, 0, 0, 0, 1 << 30]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect()
    }

    #[test]
    fn reads_the_matrices_phones_write() {
        let one = 1 << 16;
        assert_eq!(
            Rotation::from_display_matrix(&matrix(one, 0, 0, one)),
            Rotation::Upright
        );
        // What ffprobe shows as rotation=-90: a portrait phone video.
        assert_eq!(
            Rotation::from_display_matrix(&matrix(0, one, -one, 0)),
            Rotation::Clockwise
        );
        assert_eq!(
            Rotation::from_display_matrix(&matrix(-one, 0, 0, -one)),
            Rotation::HalfTurn
        );
        assert_eq!(
            Rotation::from_display_matrix(&matrix(0, -one, one, 0)),
            Rotation::CounterClockwise
        );
        assert_eq!(Rotation::from_display_matrix(&[0; 12]), Rotation::Upright);
    }

    /// A 3×2 picture whose pixels are numbered 0..6, row by row.
    fn numbered(w: usize, h: usize) -> Vec<u8> {
        (0..w * h).flat_map(|i| [i as u8; 3]).collect()
    }

    fn turned(rotation: Rotation, src_w: usize, src_h: usize) -> Vec<u8> {
        let (w, h) = if rotation.swaps_sides() {
            (src_h, src_w)
        } else {
            (src_w, src_h)
        };
        let mut out = vec![0; w * h * 3];
        rotation.apply(&numbered(src_w, src_h), src_w * 3, w, h, &mut out);
        out.chunks_exact(3).map(|p| p[0]).collect()
    }

    #[test]
    fn turns_pixels_as_the_ffmpeg_cli_does() {
        // 0 1 2
        // 3 4 5
        assert_eq!(turned(Rotation::Upright, 3, 2), [0, 1, 2, 3, 4, 5]);
        // transpose=clock: the left column, bottom up, becomes the top row.
        assert_eq!(turned(Rotation::Clockwise, 3, 2), [3, 0, 4, 1, 5, 2]);
        assert_eq!(turned(Rotation::HalfTurn, 3, 2), [5, 4, 3, 2, 1, 0]);
        // transpose=cclock: the right column, top down, becomes the top row.
        assert_eq!(turned(Rotation::CounterClockwise, 3, 2), [2, 5, 1, 4, 0, 3]);
    }
}
