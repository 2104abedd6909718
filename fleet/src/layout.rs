//! Where each output of a video lives under its output prefix.

use schema::ObjectRef;
use uuid::Uuid;

pub struct Layout<'a> {
    pub output: &'a ObjectRef,
    pub source_key: &'a str,
}

impl Layout<'_> {
    fn key(&self, dir: &str, suffix: &str) -> String {
        format!("{}{dir}/{}{suffix}", self.output.key, self.source_key)
    }

    pub fn embeddings(&self) -> String {
        self.key("embeddings", ".npy")
    }

    pub fn frames(&self) -> String {
        self.key("embeddings", ".frames.json")
    }

    pub fn captions_jsonl(&self) -> String {
        self.key("captions", ".jsonl")
    }

    pub fn captions_vtt(&self) -> String {
        self.key("captions", ".vtt")
    }

    /// One head's outputs: a JSON line per frame.
    pub fn head(&self, name: &str) -> String {
        self.key(&format!("heads/{name}"), ".jsonl")
    }

    pub fn status(&self) -> String {
        self.key("status", ".json")
    }

    /// Discovery's marker that a run of this video is queued.
    pub fn claim(&self) -> String {
        self.key(".framefleet/claims", ".json")
    }
}

/// Results waiting for their video to complete. Keyed by the submission's
/// video id so that a resubmitted video never mixes with an older run.
pub fn parts_prefix(output: &ObjectRef, video_id: Uuid) -> String {
    format!("{}.framefleet/parts/{video_id}/", output.key)
}

pub fn part_key(output: &ObjectRef, video_id: Uuid, seq: u32) -> String {
    format!("{}{seq:010}.bin", parts_prefix(output, video_id))
}

pub fn done_key(output: &ObjectRef, video_id: Uuid) -> String {
    format!("{}done.bin", parts_prefix(output, video_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_mirror_the_source_key() {
        let output = ObjectRef {
            bucket: "b".into(),
            key: "out/".into(),
        };
        let l = Layout {
            output: &output,
            source_key: "videos/a.mp4",
        };
        assert_eq!(l.embeddings(), "out/embeddings/videos/a.mp4.npy");
        assert_eq!(l.frames(), "out/embeddings/videos/a.mp4.frames.json");
        assert_eq!(l.captions_jsonl(), "out/captions/videos/a.mp4.jsonl");
        assert_eq!(l.captions_vtt(), "out/captions/videos/a.mp4.vtt");
        assert_eq!(l.head("daytime"), "out/heads/daytime/videos/a.mp4.jsonl");
        assert_eq!(l.status(), "out/status/videos/a.mp4.json");
        assert_eq!(l.claim(), "out/.framefleet/claims/videos/a.mp4.json");
        // Zero-padded so that listing order is seq order.
        assert_eq!(
            part_key(&output, Uuid::nil(), 7),
            format!("out/.framefleet/parts/{}/0000000007.bin", Uuid::nil())
        );
    }
}
