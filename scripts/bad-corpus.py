#!/usr/bin/env python3
"""Generates the bad-input corpus: odd, broken and hostile video objects,
each with the outcome the fleet must give it.

    scripts/bad-corpus.py OUTDIR

Writes the files into OUTDIR and OUTDIR/manifest.tsv, one line per file:
name, expected state (done / incomplete / failed), a text the status's
`error` must contain ("-" for none), and what the file is. The e2e test
`e2e/tests/corpus.rs` uploads them all, runs the fleet with `--sample fps=2`
and checks every status against this manifest. Needs ffmpeg and the
photos and footage of Debian's opencv-doc. Deterministic: the same
ffmpeg gives the same bytes.
"""

import os
import random
import struct
import subprocess
import sys

DATA = "/usr/share/doc/opencv-doc/examples/data"
OUT = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
os.makedirs(OUT, exist_ok=True)
manifest = []


def path(name):
    return os.path.join(OUT, name)


def case(name, state, error, what):
    """Records the expected outcome of one file, next to how it is made."""
    assert state in ("done", "incomplete", "failed"), state
    manifest.append((name, state, error, what))


def ffmpeg(*args):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True
    )


def testsrc(size="320x240", rate=25, seconds=4):
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds)]


def x264(pix_fmt="yuv420p"):
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", pix_fmt]


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


def cut(src, name, fraction):
    data = open(path(src), "rb").read()
    write(name, data[: int(len(data) * fraction)])


rng = random.Random(7)

# --- Not a video at all -------------------------------------------------------
write("zero-bytes.mp4", b"")
case("zero-bytes.mp4", "failed", "cannot open as a video", "an empty object")

write("text.mp4", b"This is a text file, not a video.\n" * 40)
case("text.mp4", "failed", "cannot open as a video", "a text file named .mp4")

write("random-bytes.mkv", bytes(rng.getrandbits(8) for _ in range(64 * 1024)))
case("random-bytes.mkv", "failed", "cannot open as a video", "64 KiB of random bytes")

ffmpeg(*["-f", "lavfi", "-i", "sine=frequency=440", "-t", "3"], "-c:a", "aac", path("audio-only.mp4"))
case("audio-only.mp4", "failed", "contains no video stream", "AAC audio, no video")

write("photo.mp4", open(f"{DATA}/fruits.jpg", "rb").read())
case("photo.mp4", "done", "-", "a JPEG photo named .mp4: libav reads it as a one-frame video")

# --- Truncated ----------------------------------------------------------------
ffmpeg(*testsrc(seconds=6), *x264(), path("_whole.mp4"))  # moov at the end
cut("_whole.mp4", "truncated-no-index.mp4", 0.5)
case("truncated-no-index.mp4", "failed", "cannot open as a video",
     "an MP4 cut in half before its index (moov) was written")

ffmpeg(*testsrc(seconds=6), *x264(), "-movflags", "+faststart", path("_faststart.mp4"))
write("truncated-header.mp4", open(path("_faststart.mp4"), "rb").read()[:600])
case("truncated-header.mp4", "failed", "cannot open as a video",
     "the first 600 bytes of a faststart MP4: the index itself is cut")
cut("_faststart.mp4", "truncated-half.mp4", 0.5)
case("truncated-half.mp4", "incomplete", "truncated", "a faststart MP4 cut in half")

ffmpeg(*testsrc(seconds=6), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
       "-b:v", "300k", path("_whole.webm"))
cut("_whole.webm", "truncated-90.webm", 0.9)
case("truncated-90.webm", "incomplete", "truncated", "a VP9 WebM missing its last tenth")
cut("_whole.webm", "truncated-20.webm", 0.2)
case("truncated-20.webm", "incomplete", "truncated", "a VP9 WebM cut to its first fifth")

# --- Corrupt or lying ---------------------------------------------------------
ffmpeg(*testsrc(seconds=6), *x264(), "-f", "mpegts", path("_whole.ts"))
data = bytearray(open(path("_whole.ts"), "rb").read())
middle = len(data) // 2
data[middle : middle + 8 * 188] = bytes(rng.getrandbits(8) for _ in range(8 * 188))
write("corrupt-middle.ts", bytes(data))
case("corrupt-middle.ts", "incomplete", "damaged frames",
     "an MPEG-TS with 8 packets of random bytes in the middle: the decoder conceals them")

write("megamind-buggy.avi", open(f"{DATA}/Megamind_bugy.avi", "rb").read())
case("megamind-buggy.avi", "done", "-",
     "opencv-doc's Megamind_bugy.avi, a file OpenCV once misread: libav decodes all 270 frames")

ffmpeg(*testsrc(), "-c:v", "mpeg4", "-q:v", "5", path("_plain.avi"))
data = bytearray(open(path("_plain.avi"), "rb").read())
strf = data.index(b"strf")
# BITMAPINFOHEADER after "strf" + chunk size: biSize, then biWidth, biHeight.
struct.pack_into("<ii", data, strf + 12, 1920, 1080)
write("lying-dimensions.avi", bytes(data))
case("lying-dimensions.avi", "done", "-",
     "an AVI whose header says 1920x1080 for a 320x240 stream: the decoder's size wins")

ffmpeg(*testsrc(seconds=3), "-c:v", "ffv1", path("_short.mkv"))
data = bytearray(open(path("_short.mkv"), "rb").read())
# Segment Info's Duration (EBML id 0x4489, 8-byte float, in ms): say 30 s.
duration = data.index(b"\x44\x89\x88")
struct.pack_into(">d", data, duration + 3, 30000.0)
tag = data.find(b"00:00:03.0")
if tag >= 0:
    data[tag : tag + 10] = b"00:00:30.0"
write("lying-duration.mkv", bytes(data))
case("lying-duration.mkv", "incomplete", "truncated",
     "a 3 s Matroska whose header declares 30 s: reported against what it declares")

write("huge-dimensions.y4m",
      b"YUV4MPEG2 W100000 H100000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
case("huge-dimensions.y4m", "failed", "cannot open as a video",
     "a raw stream declaring 100000x100000: refused before any allocation")

# --- Odd but valid ------------------------------------------------------------
ffmpeg(*testsrc(size="64x64", seconds=2), "-vf", "scale=1:1", "-c:v", "ffv1", path("one-pixel.mkv"))
case("one-pixel.mkv", "done", "-", "a 1x1 video")

ffmpeg(*testsrc(size="641x359", seconds=2), "-c:v", "ffv1", path("odd-641x359.mkv"))
case("odd-641x359.mkv", "done", "-", "odd dimensions, 641x359")

ffmpeg(*testsrc(size="7680x4320", rate=2, seconds=1), *x264(), path("8k.mp4"))
case("8k.mp4", "done", "-", "7680x4320 H.264")

ffmpeg(*testsrc(seconds=2), *x264("yuv420p10le"), path("10bit.mp4"))
case("10bit.mp4", "done", "-", "H.264 High 10, yuv420p10le")

ffmpeg(*testsrc(seconds=2), *x264("yuv444p"), path("yuv444.mp4"))
case("yuv444.mp4", "done", "-", "H.264 High 4:4:4, yuv444p")

ffmpeg(*testsrc(seconds=2), "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
       path("hevc.mkv"))
case("hevc.mkv", "done", "-", "HEVC in Matroska")

ffmpeg(*testsrc(seconds=2), *x264(), path("_upright.mp4"))
data = bytearray(open(path("_upright.mp4"), "rb").read())
tkhd = data.index(b"tkhd")
# tkhd v0: the 3x3 display matrix starts 44 bytes after the tag, in 16.16
# fixed point (2.30 for the last column); width and height follow. This is
# what a phone held upright writes: rotate 90 degrees clockwise to show.
struct.pack_into(">9i", data, tkhd + 44, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
struct.pack_into(">II", data, tkhd + 80, 240 << 16, 320 << 16)
write("rotated-90.mp4", bytes(data))
case("rotated-90.mp4", "done", "-", "a phone-style display matrix: shown rotated 90 degrees")

ffmpeg(*testsrc(rate=30, seconds=4), "-vf", "setpts='PTS+if(gt(mod(N,10),4),N*0.02/TB,0)'",
       *x264(), "-fps_mode", "vfr", path("vfr.mkv"))
case("vfr.mkv", "done", "-", "variable frame rate")

ffmpeg(*testsrc(size="64x64", rate=1000, seconds=3), "-vf", "scale=16:16", "-c:v", "ffv1", path("thousands-of-frames.mkv"))
case("thousands-of-frames.mkv", "done", "-", "3,000 frames of 16x16 at 1000 fps")

ffmpeg(*testsrc(seconds=2), *testsrc(size="160x120", seconds=2), "-map", "0", "-map", "1",
       "-c:v", "ffv1", path("two-video-streams.mkv"))
case("two-video-streams.mkv", "done", "-", "two video streams: the best one is used")

ffmpeg("-i", f"{DATA}/fruits.jpg", *testsrc(seconds=2), "-map", "0", "-map", "1",
       "-c:v:0", "mjpeg", "-c:v:1", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
       "-disposition:v:0", "attached_pic", path("cover-art.mp4"))
case("cover-art.mp4", "done", "-", "an MP4 with cover art (an attached picture stream)")

ffmpeg("-i", f"{DATA}/fruits.jpg", *testsrc(seconds=2), "-map", "0", "-map", "1",
       "-c:v:0", "mjpeg", "-c:v:1", "ffv1", path("still-image-first.mkv"))
case("still-image-first.mkv", "done", "-",
     "a one-frame still-image track before the real video track")

ffmpeg(*testsrc(seconds=2), "-c:v", "ffv1", "-f", "matroska", path("matroska-named.mp4"))
case("matroska-named.mp4", "done", "-", "Matroska bytes under an .mp4 name")

for scratch in ("_whole.mp4", "_faststart.mp4", "_whole.webm", "_whole.ts", "_plain.avi", "_short.mkv", "_upright.mp4"):
    os.remove(path(scratch))

with open(path("manifest.tsv"), "w") as f:
    for row in manifest:
        f.write("\t".join(row) + "\n")
print(f"{len(manifest)} cases in {OUT}")
