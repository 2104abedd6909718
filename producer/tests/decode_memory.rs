//! Decoding holds one packet at a time, however long the video: peak RSS
//! must not grow by the size of the bitstream. Its own test binary, so
//! that nothing else in the process moves the peak.
//!
//! Regression: every packet read was leaked (libav's `av_read_frame` does
//! not unreference the packet it fills), so memory grew by the whole
//! bitstream of every video decoded.

use std::process::Command;

use producer::decode::{self, Settings};
use schema::{Fit, Sampling};

/// VmRSS or VmHWM of this process, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a size in kB");
    kib * 1024
}

fn decode_every_100th(path: &std::path::Path) -> u64 {
    let settings = Settings {
        width: 32,
        height: 32,
        fit: Fit::Stretch,
        sampling: Sampling::EveryNth(100),
        job_frames: 16,
        job_bytes: 1 << 20,
        threads: 1,
        ca_file: None,
        skip_unsampled: true,
    };
    decode::decode(&path.to_string_lossy(), &settings, |_| true)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .decoded
}

#[test]
fn peak_memory_does_not_grow_with_the_bitstream() {
    decode::init().expect("libav");
    let dir = std::env::temp_dir().join(format!("ff-decode-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Raw frames in NUT: a 46 MB bitstream that costs nothing to make or
    // to decode, so the packets' bytes dominate.
    let path = dir.join("raw.nut");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=320x240:rate=25", "-t", "16"])
        .args(["-c:v", "rawvideo", "-pix_fmt", "yuv420p"])
        .arg(&path)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bitstream = std::fs::metadata(&path).expect("video written").len();

    // The first decode loads libav's codecs and sizes the allocator's pools.
    decode_every_100th(&path);
    let before = status_bytes("VmRSS:");
    for _ in 0..2 {
        assert_eq!(decode_every_100th(&path), 400);
    }
    let grown = status_bytes("VmHWM:").saturating_sub(before);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        grown < bitstream / 4,
        "peak RSS grew by {} KiB decoding a {} KiB bitstream twice",
        grown / 1024,
        bitstream / 1024
    );
}
