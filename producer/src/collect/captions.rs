//! Caption outputs: JSON lines, and WebVTT cues built while streaming.

use serde::Serialize;

#[derive(Serialize)]
pub struct CaptionLine<'a> {
    pub index: u64,
    pub pts_s: f64,
    pub caption: &'a str,
}

/// WebVTT from captions arriving in frame order. A cue runs from its
/// frame's pts to the next sampled frame's, so each cue is written when the
/// next caption arrives; only one caption is ever held back.
#[derive(Default)]
pub struct Vtt {
    pending: Option<(f64, String)>,
    /// Gap between the last two captions, to time the final cue.
    last_gap: Option<f64>,
}

/// How long the final cue shows when its video had a single sampled frame.
const LONE_CUE_S: f64 = 1.0;

impl Vtt {
    pub const HEADER: &'static [u8] = b"WEBVTT\n";

    /// Takes the next caption; returns the text of the cue it completes.
    pub fn push(&mut self, pts_s: f64, caption: &str) -> String {
        let out = match self.pending.take() {
            Some((start, text)) => {
                self.last_gap = Some(pts_s - start);
                cue(start, pts_s, &text)
            }
            None => String::new(),
        };
        self.pending = Some((pts_s, caption.to_owned()));
        out
    }

    /// The final cue, shown for as long as the gap before it.
    pub fn finish(mut self) -> String {
        match self.pending.take() {
            Some((start, text)) => cue(start, start + self.last_gap.unwrap_or(LONE_CUE_S), &text),
            None => String::new(),
        }
    }
}

fn cue(start: f64, end: f64, text: &str) -> String {
    // A cue's text ends at a blank line and may not contain "-->"; captions
    // are one line, but the model's vocabulary does not promise that.
    let text = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("-->", "->");
    if text.is_empty() {
        return String::new();
    }
    format!("\n{} --> {}\n{text}\n", timestamp(start), timestamp(end))
}

/// `hh:mm:ss.ttt`; hours grow past two digits for very long videos.
fn timestamp(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    format!(
        "{h:02}:{:02}:{:02}.{:03}",
        rest / 60_000,
        rest % 60_000 / 1000,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0.0), "00:00:00.000");
        assert_eq!(timestamp(61.2345), "00:01:01.235");
        assert_eq!(timestamp(360_000.5), "100:00:00.500");
    }

    #[test]
    fn cues_run_until_the_next_frame() {
        let mut vtt = Vtt::default();
        let mut text = String::from_utf8(Vtt::HEADER.to_vec()).unwrap_or_default();
        text += &vtt.push(0.0, "a dog");
        text += &vtt.push(0.5, "");
        text += &vtt.push(1.25, "a cat -->\n\nhere");
        text += &vtt.finish();
        assert_eq!(
            text,
            "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\na dog\n\
             \n00:00:01.250 --> 00:00:02.000\na cat -> here\n"
        );
    }

    #[test]
    fn a_lone_caption_shows_for_a_second() {
        let mut vtt = Vtt::default();
        assert_eq!(vtt.push(3.0, "x"), "");
        assert_eq!(vtt.finish(), "\n00:00:03.000 --> 00:00:04.000\nx\n");
    }
}
