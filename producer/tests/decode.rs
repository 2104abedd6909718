//! The decode path on real and deliberately damaged files: frame times
//! always increase, and a video cut short is reported as incomplete.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use producer::decode::{self, Settings, Summary};
use schema::{Fit, Frame, Sampling};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ff-decode-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first `num / den` of a file's bytes, as a cut upload would leave it.
fn cut(path: &Path, num: usize, den: usize) -> PathBuf {
    let bytes = std::fs::read(path).expect("read");
    let out = path.with_extension(format!("cut{num}of{den}.{}", ext(path)));
    std::fs::write(&out, &bytes[..bytes.len() * num / den]).expect("write");
    out
}

fn ext(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run(path: &Path) -> (Summary, Vec<Frame>) {
    decode::init().expect("libav");
    let settings = Settings {
        width: 32,
        height: 32,
        fit: Fit::Stretch,
        sampling: Sampling::All,
        job_frames: 16,
        job_bytes: 1 << 20,
        threads: 1,
        ca_file: None,
        skip_unsampled: true,
    };
    let mut frames = Vec::new();
    let summary = decode::decode(&path.to_string_lossy(), &settings, |batch| {
        frames.extend(batch.frames);
        true
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (summary, frames)
}

fn assert_increasing(name: &str, frames: &[Frame]) {
    for w in frames.windows(2) {
        assert!(
            w[1].pts_s > w[0].pts_s,
            "{name}: frame {} at {} s does not follow frame {} at {} s",
            w[1].index,
            w[1].pts_s,
            w[0].index,
            w[0].pts_s
        );
    }
}

/// Megamind.avi's last frame comes out of the decoder's flush without a
/// timestamp of its own (regression: it repeated frame 269's).
#[test]
fn avi_without_packet_timestamps_gets_increasing_pts() {
    let (summary, frames) = run(&Path::new(DATA).join("Megamind.avi"));
    assert_eq!(summary.decoded, 270);
    assert_increasing("Megamind.avi", &frames);
    let step = frames[269].pts_s - frames[268].pts_s;
    assert!((step - 125.0 / 2997.0).abs() < 1e-9, "last step {step}");
    assert_eq!(summary.coverage.incomplete, None, "{:?}", summary.coverage);
}

#[test]
fn complete_real_footage_is_complete() {
    let (summary, frames) = run(&Path::new(DATA).join("vtest.avi"));
    assert_increasing("vtest.avi", &frames);
    assert_eq!(summary.coverage.incomplete, None, "{:?}", summary.coverage);
    assert!(summary.coverage.declared_s.is_some());
}

#[test]
fn a_truncated_webm_is_incomplete() {
    let dir = work_dir("webm");
    let full = dir.join("full.webm");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "3",
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "200k",
        &full.to_string_lossy(),
    ]);
    let (summary, _) = run(&full);
    assert_eq!(summary.coverage.incomplete, None, "{:?}", summary.coverage);
    assert_eq!(summary.coverage.declared_s, Some(3.0));

    let (summary, frames) = run(&cut(&full, 1, 3));
    assert!(
        summary.decoded > 5 && summary.decoded < 60,
        "{}",
        summary.decoded
    );
    assert_increasing("third.webm", &frames);
    let reason = summary.coverage.incomplete.expect("cut video flagged");
    assert!(reason.starts_with("truncated: frames cover"), "{reason}");
    assert!(reason.contains("of the 3.000 s"), "{reason}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_truncated_mp4_with_audio_is_incomplete() {
    let dir = work_dir("mp4");
    let full = dir.join("av.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=d=3",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-movflags",
        "+faststart",
        &full.to_string_lossy(),
    ]);
    assert_eq!(run(&full).0.coverage.incomplete, None);
    let (summary, _) = run(&cut(&full, 1, 2));
    let reason = summary.coverage.incomplete.expect("cut video flagged");
    assert!(reason.contains("of the 3.000 s"), "{reason}");
    std::fs::remove_dir_all(dir).ok();
}

/// A video track that ends before its audio is not a truncation: the video
/// stream's own declared length is what counts.
#[test]
fn video_shorter_than_its_audio_is_complete() {
    let dir = work_dir("short");
    for container in ["mkv", "mp4"] {
        let path = dir.join(format!("short.{container}"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=1",
            "-f",
            "lavfi",
            "-i",
            "sine=d=4",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            &path.to_string_lossy(),
        ]);
        let (summary, frames) = run(&path);
        assert_eq!(frames.len(), 10);
        assert_eq!(
            summary.coverage.incomplete, None,
            "{container}: {:?}",
            summary.coverage
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Every pixel of every frame the decoder hands over, at 32×32.
fn pixels(path: &Path) -> Vec<u8> {
    fitted(path, Fit::Stretch)
}

fn fitted(path: &Path, fit: Fit) -> Vec<u8> {
    decode::init().expect("libav");
    let settings = Settings {
        width: 32,
        height: 32,
        fit,
        sampling: Sampling::All,
        job_frames: 16,
        job_bytes: 1 << 20,
        threads: 1,
        ca_file: None,
        skip_unsampled: true,
    };
    let mut pixels = Vec::new();
    decode::decode(&path.to_string_lossy(), &settings, |batch| {
        pixels.extend(batch.pixels);
        true
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pixels
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64
}

/// A phone's portrait video (display matrix: turn 90° clockwise) reaches
/// the model upright, as the ffmpeg CLI shows it.
#[test]
fn display_rotation_is_applied() {
    let dir = work_dir("rotation");
    let upright = dir.join("upright.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=10",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-pix_fmt",
        "yuv444p",
        &upright.to_string_lossy(),
    ]);
    let mut bytes = std::fs::read(&upright).expect("read");
    let tkhd = bytes
        .windows(4)
        .position(|w| w == b"tkhd")
        .expect("tkhd box");
    // tkhd v0: the display matrix is 44 bytes after the tag, big-endian.
    let matrix: [i32; 9] = [0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30];
    for (i, v) in matrix.iter().enumerate() {
        let at = tkhd + 44 + 4 * i;
        bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    let rotated = dir.join("rotated.mp4");
    std::fs::write(&rotated, bytes).expect("write");

    // The CLI applies the matrix by default (autorotate), then scales.
    let reference = dir.join("reference.rgb");
    ffmpeg(&[
        "-i",
        &rotated.to_string_lossy(),
        "-vf",
        "scale=32:32:flags=bicubic",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        &reference.to_string_lossy(),
    ]);
    let reference = std::fs::read(&reference).expect("reference");
    let ours = pixels(&rotated);
    let unturned = pixels(&upright);
    let turned = mean_abs_diff(&ours, &reference);
    let not_turned = mean_abs_diff(&unturned, &reference);
    assert!(
        turned < 3.0,
        "rotated frames differ from the CLI's by {turned:.2} per channel"
    );
    assert!(
        not_turned > 20.0,
        "the rotation is visible: {not_turned:.2} without it"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A centre-crop task (DINOv2's processor: shorter side to 256, centre
/// 224; here to 40, centre 32) sees only the middle of a wide frame: a
/// white band on black, wider than the crop, fills the whole input, where
/// the stretched frame keeps its black sides.
#[test]
fn a_centre_crop_keeps_only_the_middle() {
    let dir = work_dir("crop");
    let video = dir.join("band.mp4");
    // 320x180 -> 71x40; the centre 32x32 is source columns 85.5 to 229.5,
    // well inside the band's 60 to 260.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:size=320x180:rate=5,drawbox=x=60:y=0:w=200:h=180:color=white:t=fill",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-pix_fmt",
        "yuv420p",
        &video.to_string_lossy(),
    ]);
    let cropped = fitted(&video, Fit::CenterCrop { short: 40 });
    assert_eq!(cropped.len(), 5 * 32 * 32 * 3);
    let darkest = cropped.iter().min().copied().unwrap_or_default();
    assert!(darkest > 230, "a dark pixel inside the crop: {darkest}");
    let stretched = pixels(&video);
    let black = stretched.iter().filter(|&&v| v < 25).count();
    assert!(
        black > stretched.len() / 5,
        "the stretched frame lost its sides: {black}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// What one decode returns: its summary, the kept frames and their pixels.
fn sampled(
    path: &Path,
    sampling: Sampling,
    threads: usize,
    skip_unsampled: bool,
) -> (Summary, Vec<Frame>, Vec<u8>) {
    decode::init().expect("libav");
    let settings = Settings {
        width: 32,
        height: 32,
        fit: Fit::Stretch,
        sampling,
        job_frames: 16,
        job_bytes: 1 << 20,
        threads,
        ca_file: None,
        skip_unsampled,
    };
    let (mut frames, mut pixels) = (Vec::new(), Vec::new());
    let summary = decode::decode(&path.to_string_lossy(), &settings, |batch| {
        frames.extend(batch.frames);
        pixels.extend(batch.pixels);
        true
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (summary, frames, pixels)
}

/// 200 frames of vtest.avi as x264 (medium: three B-frames, B-pyramid), an
/// I-frame every 50 frames and no other, 10 fps.
fn gop50_clip(dir: &Path) -> PathBuf {
    let path = dir.join("gop50.mp4");
    ffmpeg(&[
        "-i",
        &Path::new(DATA).join("vtest.avi").to_string_lossy(),
        "-frames:v",
        "200",
        "-vf",
        "scale=320:240",
        "-c:v",
        "libx264",
        "-g",
        "50",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        &path.to_string_lossy(),
    ]);
    path
}

/// The positions, in presentation order, of the frames ffprobe reports as
/// I pictures: an oracle independent of our decode path.
fn intra_positions(path: &Path) -> Vec<u64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pict_type",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // ffprobe adds a blank line for a frame's side data.
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .filter(|(_, t)| t.trim().trim_end_matches(',') == "I")
        .map(|(i, _)| i as u64)
        .collect()
}

/// Sparse `fps` sampling lets the decoder skip unreferenced frames between
/// sampling instants, and returns exactly what decoding every frame returns:
/// the same frames, positions, times and pixels, single- and
/// frame-threaded, on x264 with B-frames and on vtest.avi's MPEG-4.
#[test]
fn fps_sampling_skips_frames_and_keeps_the_same_output() {
    let dir = work_dir("fps-skip");
    let x264 = gop50_clip(&dir);
    let vtest = Path::new(DATA).join("vtest.avi");
    for (path, fps) in [(&x264, 1.0), (&x264, 3.0), (&vtest, 1.0)] {
        for threads in [1, 0] {
            let name = format!("{} fps={fps} threads={threads}", path.display());
            let (full, full_frames, full_pixels) =
                sampled(path, Sampling::Fps(fps), threads, false);
            let (sparse, frames, pixels) = sampled(path, Sampling::Fps(fps), threads, true);
            assert_eq!(frames, full_frames, "{name}");
            assert!(pixels == full_pixels, "{name}: pixels differ");
            assert_eq!(sparse.sampled, full.sampled, "{name}");
            assert_eq!(sparse.coverage, full.coverage, "{name}");
            assert_eq!(sparse.coverage.incomplete, None, "{name}");
            if path == &x264 {
                // x264 leaves most B-frames unreferenced.
                assert!(
                    sparse.decoded * 10 < full.decoded * 8,
                    "{name}: decoded {} of {}",
                    sparse.decoded,
                    full.decoded
                );
            }
        }
    }
    let (_, frames, _) = sampled(&x264, Sampling::Fps(1.0), 1, true);
    assert_eq!(
        frames.iter().map(|f| f.index).collect::<Vec<_>>(),
        (0..20).map(|s| s * 10).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Keyframe sampling keeps the I pictures ffprobe reports, at their
/// positions, decoding little else; the video still counts as complete.
#[test]
fn keyframe_sampling_keeps_the_intra_frames_only() {
    let dir = work_dir("keyframes");
    let x264 = gop50_clip(&dir);
    let vtest = Path::new(DATA).join("vtest.avi");
    for path in [&x264, &vtest] {
        let intra = intra_positions(path);
        assert!(intra.len() >= 4, "{}: {intra:?}", path.display());
        for threads in [1, 0] {
            let name = format!("{} threads={threads}", path.display());
            let (full, full_frames, full_pixels) =
                sampled(path, Sampling::Keyframes, threads, false);
            let (sparse, frames, pixels) = sampled(path, Sampling::Keyframes, threads, true);
            let positions: Vec<u64> = frames.iter().map(|f| f.index).collect();
            assert_eq!(positions, intra, "{name}");
            assert_eq!(frames, full_frames, "{name}");
            assert!(pixels == full_pixels, "{name}: pixels differ");
            assert_eq!(
                sparse.coverage.incomplete, None,
                "{name}: {:?}",
                sparse.coverage
            );
            assert_eq!(sparse.coverage, full.coverage, "{name}");
            assert!(
                sparse.decoded <= 2 * intra.len() as u64,
                "{name}: decoded {} for {} keyframes",
                sparse.decoded,
                intra.len()
            );
        }
    }
    assert_eq!(intra_positions(&x264), [0, 50, 100, 150]);
    std::fs::remove_dir_all(dir).ok();
}

/// Scene sampling keeps the first frame and the first frame after each cut:
/// 2 s of street, 2 s of a still photo, 2 s of street from later on, at
/// 25 fps.
#[test]
fn scene_sampling_keeps_the_cuts() {
    let dir = work_dir("scene");
    let path = dir.join("cuts.mp4");
    let part = "scale=320:240,fps=25,format=yuv420p,setsar=1";
    ffmpeg(&[
        "-i",
        &Path::new(DATA).join("vtest.avi").to_string_lossy(),
        "-loop",
        "1",
        "-t",
        "2",
        "-i",
        &Path::new(DATA).join("baboon.jpg").to_string_lossy(),
        "-filter_complex",
        &format!(
            "[0:v]split[s1][s2];\
             [s1]trim=0:2,setpts=PTS-STARTPTS,{part}[a];\
             [1:v]{part}[b];\
             [s2]trim=40:42,setpts=PTS-STARTPTS,{part}[c];\
             [a][b][c]concat=n=3:v=1:a=0"
        ),
        "-c:v",
        "libx264",
        &path.to_string_lossy(),
    ]);
    let (summary, frames, _) = sampled(&path, Sampling::Scene(0.4), 1, true);
    assert_eq!(summary.decoded, 150);
    assert_eq!(
        frames.iter().map(|f| f.index).collect::<Vec<_>>(),
        [0, 50, 100]
    );
    // A low threshold also takes the street's own motion for cuts.
    let (_, frames, _) = sampled(&path, Sampling::Scene(0.005), 1, true);
    assert!(frames.len() > 10, "{} frames", frames.len());
    std::fs::remove_dir_all(dir).ok();
}
