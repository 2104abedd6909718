use proptest::prelude::*;
use schema::{
    Coverage, DecodeError, Frame, FrameJob, FrameResult, HeadOutputs, HeadValues, Label, Message,
    ObjectRef, Payload, Provenance, Sampling, VERSION, ValidationError, VideoDone, VideoFailed,
    VideoTask, decode, encode,
};
use uuid::Uuid;

fn object() -> impl Strategy<Value = ObjectRef> {
    ("[a-z][a-z0-9-]{2,20}", "[a-zA-Z0-9/._ -]{0,40}")
        .prop_map(|(bucket, key)| ObjectRef { bucket, key })
}

fn source() -> impl Strategy<Value = ObjectRef> {
    ("[a-z][a-z0-9-]{2,20}", "[a-zA-Z0-9/._ -]{1,40}")
        .prop_map(|(bucket, key)| ObjectRef { bucket, key })
}

fn frames(max: usize) -> impl Strategy<Value = Vec<Frame>> {
    prop::collection::vec(
        (any::<u64>(), -1e6f64..1e6).prop_map(|(index, pts_s)| Frame { index, pts_s }),
        1..max,
    )
}

fn sampling() -> impl Strategy<Value = Sampling> {
    prop_oneof![
        Just(Sampling::All),
        (0.01f64..240.0).prop_map(Sampling::Fps),
        (1u32..1000).prop_map(Sampling::EveryNth),
        Just(Sampling::Keyframes),
        (0.01f64..0.99).prop_map(Sampling::Scene),
    ]
}

fn job() -> impl Strategy<Value = FrameJob> {
    (
        any::<u128>(),
        source(),
        object(),
        any::<u32>(),
        1u32..9,
        1u32..9,
        frames(5),
    )
        .prop_flat_map(|(id, source, output, seq, width, height, frames)| {
            let n = (width * height * 3) as usize * frames.len();
            prop::collection::vec(any::<u8>(), n).prop_map(move |pixels| FrameJob {
                video_id: Uuid::from_u128(id),
                task: "embed.effnet-lite0".into(),
                source: source.clone(),
                output: output.clone(),
                seq,
                width,
                height,
                frames: frames.clone(),
                payload: if seq % 2 == 0 {
                    Payload::Raw
                } else {
                    Payload::Zstd
                },
                pixels,
                frame_bytes: Vec::new(),
            })
        })
}

fn result() -> impl Strategy<Value = FrameResult> {
    (
        any::<u128>(),
        source(),
        object(),
        any::<u32>(),
        0u32..8,
        frames(4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(id, source, output, seq, dim, frames, with_labels, with_captions, with_heads)| {
                let n = dim as usize * frames.len();
                let labels = if with_labels {
                    frames
                        .iter()
                        .map(|_| {
                            vec![Label {
                                class: 950,
                                name: "orange".into(),
                                score: 0.9,
                            }]
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                // A caption-only result (dim 0) must carry captions.
                let captions: Vec<String> = if dim == 0 || with_captions {
                    (0..frames.len())
                        .map(|i| format!("a cat ✓ on frame {i}"))
                        .collect()
                } else {
                    Vec::new()
                };
                let heads = if with_heads {
                    vec![
                        HeadOutputs {
                            name: "daytime".into(),
                            values: HeadValues::Classes(
                                frames
                                    .iter()
                                    .map(|_| Label {
                                        class: 1,
                                        name: "night".into(),
                                        score: 0.75,
                                    })
                                    .collect(),
                            ),
                        },
                        HeadOutputs {
                            name: "people".into(),
                            values: HeadValues::Numbers(vec![2.5; frames.len()]),
                        },
                    ]
                } else {
                    Vec::new()
                };
                prop::collection::vec(-10f32..10.0, n).prop_map(move |embeddings| FrameResult {
                    video_id: Uuid::from_u128(id),
                    task: "embed.effnet-lite0".into(),
                    source: source.clone(),
                    output: output.clone(),
                    seq,
                    frames: frames.clone(),
                    model: "efficientnet-lite0".into(),
                    dim,
                    embeddings,
                    labels: labels.clone(),
                    captions: captions.clone(),
                    compute_ms: 7,
                    heads: heads.clone(),
                })
            },
        )
}

fn provenance() -> impl Strategy<Value = Provenance> {
    (
        proptest::option::of("\"[0-9a-f]{32}(-[0-9]{1,3})?\""),
        "[0-9a-f]{32}",
    )
        .prop_map(|(etag, fingerprint)| Provenance { etag, fingerprint })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u128>(), source(), object(), sampling(), provenance()).prop_map(
            |(id, source, output, sampling, provenance)| {
                Message::VideoTask(VideoTask {
                    video_id: Uuid::from_u128(id),
                    source,
                    task: "embed.effnet-lite0".into(),
                    sampling,
                    payload: [Payload::Raw, Payload::Zstd, Payload::Jpeg(90)][(id % 3) as usize],
                    output,
                    provenance,
                })
            }
        ),
        job().prop_map(Message::FrameJob),
        result().prop_map(Message::FrameResult),
        (
            any::<u128>(),
            source(),
            object(),
            any::<u32>(),
            any::<u64>(),
            proptest::option::of("\\PC{1,200}"),
            provenance(),
        )
            .prop_map(
                |(id, source, output, jobs, frames, incomplete, provenance)| Message::VideoDone(
                    VideoDone {
                        video_id: Uuid::from_u128(id),
                        task: "embed.effnet-lite0".into(),
                        source,
                        output,
                        jobs,
                        frames,
                        decoded: frames,
                        decode_ms: 12,
                        coverage: Coverage {
                            decode_errors: u64::from(jobs % 3),
                            declared_s: incomplete.as_ref().map(|_| 12.5),
                            covered_s: 4.25,
                            incomplete,
                        },
                        provenance,
                    }
                )
            ),
        (
            any::<u128>(),
            source(),
            object(),
            "\\PC{1,200}",
            provenance()
        )
            .prop_map(|(id, source, output, reason, provenance)| {
                Message::VideoFailed(VideoFailed {
                    video_id: Uuid::from_u128(id),
                    task: "embed.effnet-lite0".into(),
                    source,
                    output,
                    reason,
                    provenance,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let bytes = encode(&m).expect("valid message encodes");
        prop_assert_eq!(decode(&bytes).expect("own encoding decodes"), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"FF".to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&body);
        let _ = decode(&bytes);
    }

    #[test]
    fn truncated_payloads_are_errors(m in message(), cut in 1usize..64) {
        let bytes = encode(&m).expect("valid message encodes");
        let cut = cut.min(bytes.len());
        prop_assert!(decode(&bytes[..bytes.len() - cut]).is_err());
    }
}

fn sample_job() -> FrameJob {
    FrameJob {
        video_id: Uuid::nil(),
        task: "embed.effnet-lite0".into(),
        source: ObjectRef {
            bucket: "b".into(),
            key: "v.mp4".into(),
        },
        output: ObjectRef {
            bucket: "b".into(),
            key: "out/".into(),
        },
        seq: 0,
        width: 4,
        height: 2,
        frames: vec![
            Frame {
                index: 0,
                pts_s: 0.0,
            },
            Frame {
                index: 1,
                pts_s: 0.04,
            },
        ],
        payload: Payload::Raw,
        pixels: vec![0; 4 * 2 * 3 * 2],
        frame_bytes: Vec::new(),
    }
}

#[test]
fn pixel_bytes_must_match_size_times_frames() {
    let mut job = sample_job();
    job.pixels.pop();
    let err = encode(&Message::FrameJob(job)).expect_err("short pixel buffer");
    assert!(matches!(
        err,
        schema::EncodeError::Invalid(ValidationError::PixelBytes {
            expected: 48,
            actual: 47,
            ..
        })
    ));
}

#[test]
fn other_versions_are_reported_as_such_not_as_corruption() {
    let mut bytes = encode(&Message::FrameJob(sample_job())).expect("encodes");
    bytes[2..4].copy_from_slice(&(VERSION + 1).to_le_bytes());
    assert!(
        matches!(decode(&bytes), Err(DecodeError::UnsupportedVersion { found }) if found == VERSION + 1)
    );
}

/// A version 4 task (what a watcher or `submit` not yet upgraded
/// publishes), before `payload`: read as raw.
#[test]
fn version_4_tasks_are_read_as_raw() {
    let source = ObjectRef {
        bucket: "b".into(),
        key: "videos/a.mp4".into(),
    };
    let output = ObjectRef {
        bucket: "b".into(),
        key: "outputs/".into(),
    };
    let provenance = Provenance {
        etag: None,
        fingerprint: "f".into(),
    };
    let old = MessageV4::VideoTask(VideoTaskV4 {
        video_id: Uuid::from_u128(5),
        source: source.clone(),
        task: "embed.effnet-lite0".into(),
        sampling: Sampling::Fps(2.0),
        output: output.clone(),
        provenance: provenance.clone(),
    });
    let mut bytes = b"FF".to_vec();
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bincode::serde::encode_into_std_write(&old, &mut bytes, bincode::config::standard())
        .expect("encodes");
    let task = VideoTask {
        video_id: Uuid::from_u128(5),
        source,
        task: "embed.effnet-lite0".into(),
        sampling: Sampling::Fps(2.0),
        payload: Payload::Raw,
        output,
        provenance,
    };
    assert!(matches!(decode(&bytes), Ok(Message::VideoTask(t)) if t == task));
}

#[test]
fn scene_thresholds_outside_0_1_are_refused() {
    for t in [0.0, 1.0, -0.5, f64::NAN] {
        let task = VideoTask {
            video_id: Uuid::from_u128(5),
            source: ObjectRef {
                bucket: "b".into(),
                key: "videos/a.mp4".into(),
            },
            task: "embed.effnet-lite0".into(),
            sampling: Sampling::Scene(t),
            payload: Payload::Raw,
            output: ObjectRef {
                bucket: "b".into(),
                key: "outputs/".into(),
            },
            provenance: Provenance {
                etag: None,
                fingerprint: "f".into(),
            },
        };
        assert!(
            matches!(
                encode(&Message::VideoTask(task)),
                Err(schema::EncodeError::Invalid(ValidationError::BadSampling(
                    _
                )))
            ),
            "threshold {t}"
        );
    }
}

#[test]
fn compressed_pixels_are_bounded_by_what_they_unpack_to() {
    let mut job = sample_job();
    job.payload = Payload::Zstd;
    job.pixels = vec![1, 2, 3];
    assert!(encode(&Message::FrameJob(job.clone())).is_ok());
    job.pixels.clear();
    assert!(matches!(
        encode(&Message::FrameJob(job.clone())),
        Err(schema::EncodeError::Invalid(ValidationError::Empty(
            "pixels"
        )))
    ));
    // JPEG: one positive size per frame, adding up to the bytes.
    let mut jpeg = job.clone();
    jpeg.payload = Payload::Jpeg(90);
    jpeg.pixels = vec![1; 10];
    jpeg.frame_bytes = vec![4, 6];
    assert!(encode(&Message::FrameJob(jpeg.clone())).is_ok());
    for sizes in [vec![4, 5], vec![10], vec![0, 10]] {
        jpeg.frame_bytes = sizes;
        assert!(matches!(
            encode(&Message::FrameJob(jpeg.clone())),
            Err(schema::EncodeError::Invalid(
                ValidationError::FrameBytes { .. }
            ))
        ));
    }
    jpeg.frame_bytes = vec![4, 6];
    jpeg.payload = Payload::Jpeg(0);
    assert!(matches!(
        encode(&Message::FrameJob(jpeg)),
        Err(schema::EncodeError::Invalid(ValidationError::BadQuality(0)))
    ));
    // 2048² RGB × 2 frames unpacks past the 16 MiB message limit.
    job.pixels = vec![1];
    (job.width, job.height) = (2048, 2048);
    assert!(matches!(
        encode(&Message::FrameJob(job)),
        Err(schema::EncodeError::Invalid(
            ValidationError::UnpackedTooLarge { .. }
        ))
    ));
}

/// Version 4's `FrameJob`, before `payload` and `frame_bytes`: field for
/// field, and the message enum's variant order.
#[derive(serde::Serialize)]
struct FrameJobV4 {
    video_id: Uuid,
    task: String,
    source: ObjectRef,
    output: ObjectRef,
    seq: u32,
    width: u32,
    height: u32,
    frames: Vec<Frame>,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
}

/// Version 4's `VideoTask`, before `payload`.
#[derive(serde::Serialize)]
struct VideoTaskV4 {
    video_id: Uuid,
    source: ObjectRef,
    task: String,
    sampling: Sampling,
    output: ObjectRef,
    provenance: Provenance,
}

#[derive(serde::Serialize)]
enum MessageV4 {
    VideoTask(VideoTaskV4),
    FrameJob(FrameJobV4),
}

#[test]
fn version_4_jobs_are_read_as_raw() {
    let job = sample_job();
    let old = MessageV4::FrameJob(FrameJobV4 {
        video_id: job.video_id,
        task: job.task.clone(),
        source: job.source.clone(),
        output: job.output.clone(),
        seq: job.seq,
        width: job.width,
        height: job.height,
        frames: job.frames.clone(),
        pixels: job.pixels.clone(),
    });
    let mut bytes = b"FF".to_vec();
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bincode::serde::encode_into_std_write(&old, &mut bytes, bincode::config::standard())
        .expect("encodes");
    assert!(matches!(decode(&bytes), Ok(Message::FrameJob(j)) if j == job));
}

#[test]
fn foreign_payloads_are_bad_magic() {
    assert!(matches!(
        decode(b"{\"json\": true}"),
        Err(DecodeError::BadMagic)
    ));
    assert!(matches!(decode(b"FF"), Err(DecodeError::TooShort(2))));
}

#[test]
fn oversized_payloads_are_refused_before_decoding() {
    let bytes = vec![0u8; 16 * 1024 * 1024 + 1];
    assert!(matches!(decode(&bytes), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn long_failure_reasons_are_cut_to_fit_the_wire() {
    let reason = "é".repeat(5000);
    let cut = VideoFailed::truncate_reason(&reason);
    assert!(cut.len() <= schema::Limits::DEFAULT.max_text_bytes);
    assert!(cut.ends_with("..."));
}

/// Version 3, the wire before heads: what a worker not yet upgraded sends
/// and what a collector stored before its upgrade. Field for field the old
/// `FrameResult`, and the old enum's variant order.
#[derive(serde::Serialize)]
struct FrameResultV3 {
    video_id: Uuid,
    task: String,
    source: ObjectRef,
    output: ObjectRef,
    seq: u32,
    frames: Vec<Frame>,
    model: String,
    dim: u32,
    embeddings: Vec<f32>,
    labels: Vec<Vec<Label>>,
    captions: Vec<String>,
    compute_ms: u32,
}

#[derive(serde::Serialize)]
#[allow(dead_code)] // only the variant's position is encoded
enum MessageV3 {
    VideoTask,
    FrameJob,
    FrameResult(Box<FrameResultV3>),
}

#[test]
fn version_3_results_are_read_without_heads() {
    let frame = Frame {
        index: 3,
        pts_s: 0.12,
    };
    let object = ObjectRef {
        bucket: "b".into(),
        key: "videos/a.mp4".into(),
    };
    let old = MessageV3::FrameResult(Box::new(FrameResultV3 {
        video_id: Uuid::from_u128(9),
        task: "embed.effnet-lite0".into(),
        source: object.clone(),
        output: object.clone(),
        seq: 2,
        frames: vec![frame],
        model: "effnet".into(),
        dim: 2,
        embeddings: vec![0.5, -1.0],
        labels: Vec::new(),
        captions: Vec::new(),
        compute_ms: 4,
    }));
    let mut bytes = b"FF".to_vec();
    bytes.extend_from_slice(&3u16.to_le_bytes());
    bincode::serde::encode_into_std_write(&old, &mut bytes, bincode::config::standard())
        .expect("encodes");
    let Ok(Message::FrameResult(result)) = decode(&bytes) else {
        panic!("a version 3 result must decode: {:?}", decode(&bytes));
    };
    assert_eq!((result.seq, result.dim), (2, 2));
    assert_eq!(result.embeddings, vec![0.5, -1.0]);
    assert_eq!(result.frames, vec![frame]);
    assert!(result.heads.is_empty());
}

#[test]
fn head_values_must_cover_every_frame() {
    let Message::FrameResult(mut result) = sample_result() else {
        unreachable!()
    };
    result.heads = vec![HeadOutputs {
        name: "people".into(),
        values: HeadValues::Numbers(vec![1.0]),
    }];
    assert!(matches!(
        result.validate(&schema::Limits::DEFAULT),
        Err(ValidationError::HeadValueCount {
            values: 1,
            frames: 2,
            ..
        })
    ));
    result.heads[0].values = HeadValues::Numbers(vec![1.0, f32::NAN]);
    assert!(matches!(
        result.validate(&schema::Limits::DEFAULT),
        Err(ValidationError::BadHeadValue(_))
    ));
}

fn sample_result() -> Message {
    let object = ObjectRef {
        bucket: "b".into(),
        key: "videos/a.mp4".into(),
    };
    Message::FrameResult(FrameResult {
        video_id: Uuid::from_u128(1),
        task: "embed.effnet-lite0".into(),
        source: object.clone(),
        output: object,
        seq: 0,
        frames: vec![
            Frame {
                index: 0,
                pts_s: 0.0,
            },
            Frame {
                index: 1,
                pts_s: 0.04,
            },
        ],
        model: "effnet".into(),
        dim: 1,
        embeddings: vec![0.0, 1.0],
        labels: Vec::new(),
        captions: Vec::new(),
        compute_ms: 1,
        heads: Vec::new(),
    })
}
