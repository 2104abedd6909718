//! What a run is for: the task and the settings that shape its outputs,
//! hashed into a fingerprint that statuses record.

use anyhow::Context;
use schema::{ObjectRef, Payload, Sampling};
use uuid::Uuid;

use fleet::store;

/// The pipeline flags `submit` and `watch` share. The model, prompt and
/// token limit are the workers' settings; the enqueuer only records them in
/// the fingerprint, so that changing them processes videos again. Compose
/// gives the watcher and the workers the same variables.
#[derive(Clone, Debug, clap::Args)]
pub struct PipelineArgs {
    /// Task, i.e. model and output kind.
    #[arg(long, env = "FF_TASK", default_value = "embed.effnet-lite0")]
    pub task: String,

    /// Which frames to keep: all, fps=F, every=N, keyframes (intra frames
    /// only, the rest not decoded) or scene[=T] (the first frame and each
    /// scene change scoring over T, 0 < T < 1, default 0.4).
    #[arg(long, env = "FF_SAMPLE", default_value = "all", value_parser = parse_sampling)]
    pub sample: Sampling,

    /// How frames travel from producer to workers: raw; zstd (lossless, so
    /// outputs do not change: fewer broker bytes for some producer CPU); or
    /// jpeg=Q, quality 1–100 (lossy: about a tenth of the bytes, and
    /// embeddings or captions close to, not equal to, raw's). See
    /// BENCHMARKS.md.
    #[arg(long, env = "FF_PAYLOAD", default_value = "raw", value_parser = parse_payload)]
    pub payload: Payload,

    /// s3://BUCKET/PREFIX for outputs [default: s3://<source bucket>/outputs/].
    #[arg(long, env = "FF_OUTPUT")]
    pub output: Option<String>,

    /// Identity of the weights the task's workers run (hub repo and
    /// revision, or a version label of a model directory).
    #[arg(long, env = "FF_MODEL_ID", default_value = "default")]
    pub model_id: String,

    /// Prompt of caption tasks' workers.
    #[arg(long, env = "FF_PROMPT", default_value = "")]
    pub prompt: String,

    /// Token limit of caption tasks' workers.
    #[arg(long, env = "FF_MAX_TOKENS", default_value_t = 30)]
    pub max_tokens: u16,
}

/// Scene-change threshold of a bare `scene`: ffmpeg's usual `scene,0.4`.
const SCENE_THRESHOLD: f64 = 0.4;

/// Parses `all`, `fps=F`, `every=N`, `keyframes`, `scene` or `scene=T`.
pub fn parse_sampling(text: &str) -> Result<Sampling, String> {
    let bad = || {
        format!(
            "sampling {text:?} is not all, fps=F (F > 0), every=N (N ≥ 1), keyframes, scene or scene=T (0 < T < 1)"
        )
    };
    match text.split_once('=') {
        None if text == "all" => Ok(Sampling::All),
        None if text == "keyframes" => Ok(Sampling::Keyframes),
        None if text == "scene" => Ok(Sampling::Scene(SCENE_THRESHOLD)),
        Some(("scene", t)) => match t.parse::<f64>() {
            Ok(t) if t > 0.0 && t < 1.0 => Ok(Sampling::Scene(t)),
            _ => Err(bad()),
        },
        Some(("fps", f)) => match f.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Sampling::Fps(f)),
            _ => Err(bad()),
        },
        Some(("every", n)) => match n.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Sampling::EveryNth(n)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// Parses `raw`, `zstd` or `jpeg=Q`.
pub fn parse_payload(text: &str) -> Result<Payload, String> {
    let bad = || format!("payload {text:?} is not raw, zstd or jpeg=Q (1 ≤ Q ≤ 100)");
    match text.split_once('=') {
        None if text == "raw" => Ok(Payload::Raw),
        None if text == "zstd" => Ok(Payload::Zstd),
        Some(("jpeg", q)) => match q.parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => Ok(Payload::Jpeg(q)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The flag form of a payload; `parse_payload` reads it back.
pub fn payload_text(payload: Payload) -> String {
    match payload {
        Payload::Raw => "raw".into(),
        Payload::Zstd => "zstd".into(),
        Payload::Jpeg(q) => format!("jpeg={q}"),
    }
}

/// The flag form of a sampling rule; `parse_sampling` reads it back.
pub fn sampling_text(sampling: Sampling) -> String {
    match sampling {
        Sampling::All => "all".into(),
        Sampling::Fps(f) => format!("fps={f}"),
        Sampling::EveryNth(n) => format!("every={n}"),
        Sampling::Keyframes => "keyframes".into(),
        Sampling::Scene(t) => format!("scene={t}"),
    }
}

/// Output prefixes always end in `/` so that keys join cleanly.
pub fn normalize_prefix(mut output: ObjectRef) -> ObjectRef {
    if !output.key.is_empty() && !output.key.ends_with('/') {
        output.key.push('/');
    }
    output
}

/// A resolved pipeline for videos under one source prefix.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub task: String,
    pub sampling: Sampling,
    pub payload: Payload,
    pub output: ObjectRef,
    model_id: String,
    prompt: String,
    max_tokens: u16,
}

/// Namespace of Framefleet's name-based UUIDs.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6672_616d_6566_6c65_6574_0000_0000_0001);

impl Pipeline {
    pub fn resolve(args: &PipelineArgs, source: &ObjectRef) -> anyhow::Result<Self> {
        schema::known_task(&args.task).with_context(|| format!("unknown task {}", args.task))?;
        let output = match &args.output {
            Some(url) => store::parse_url(url)?,
            None => ObjectRef {
                bucket: source.bucket.clone(),
                key: "outputs/".into(),
            },
        };
        Ok(Self {
            task: args.task.clone(),
            sampling: args.sample,
            payload: args.payload,
            output: normalize_prefix(output),
            model_id: args.model_id.clone(),
            prompt: args.prompt.clone(),
            max_tokens: args.max_tokens,
        })
    }

    /// Every setting that shapes the outputs, one per line, in a fixed
    /// order. Prompt and token limit only exist for caption tasks.
    pub fn description(&self) -> String {
        let mut text = format!(
            "task={}\nmodel={}\nsampling={}\noutput={}\n",
            self.task,
            self.model_id,
            sampling_text(self.sampling),
            self.output
        );
        if self.task.starts_with("caption.") {
            text += &format!("prompt={:?}\nmax_tokens={}\n", self.prompt, self.max_tokens);
        }
        // A lossy payload changes the model's input; a lossless one does
        // not, and leaves the fingerprint as it was before payloads existed.
        if let Payload::Jpeg(_) = self.payload {
            text += &format!("payload={}\n", payload_text(self.payload));
        }
        text
    }

    pub fn fingerprint(&self) -> String {
        Uuid::new_v5(&ID_NAMESPACE, self.description().as_bytes())
            .simple()
            .to_string()
    }

    /// The run's id: the same object bytes under the same pipeline always
    /// get the same id, so a second enqueue of them is recognisable
    /// downstream as the same run.
    pub fn video_id(&self, source: &ObjectRef, etag: Option<&str>) -> Uuid {
        let name = format!(
            "{source}\n{}\n{}",
            etag.unwrap_or_default(),
            self.fingerprint()
        );
        Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
    }

    /// Whether a key is one of the pipeline's own outputs or a folder
    /// marker, never a video to process.
    pub fn is_own_or_marker(&self, object: &ObjectRef) -> bool {
        let is_output = self.output.bucket == object.bucket
            && !self.output.key.is_empty()
            && object.key.starts_with(&self.output.key);
        object.key.ends_with('/') || is_output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> PipelineArgs {
        PipelineArgs {
            task: "caption.blip-base".into(),
            sample: Sampling::Fps(2.0),
            payload: Payload::Raw,
            output: None,
            model_id: "Salesforce/blip-image-captioning-base@main".into(),
            prompt: String::new(),
            max_tokens: 30,
        }
    }

    fn source() -> ObjectRef {
        ObjectRef {
            bucket: "b".into(),
            key: "videos/".into(),
        }
    }

    #[test]
    fn sampling_flags() {
        assert_eq!(parse_sampling("all"), Ok(Sampling::All));
        assert_eq!(parse_sampling("fps=2.5"), Ok(Sampling::Fps(2.5)));
        assert_eq!(parse_sampling("every=10"), Ok(Sampling::EveryNth(10)));
        assert_eq!(parse_sampling("keyframes"), Ok(Sampling::Keyframes));
        assert_eq!(parse_sampling("scene"), Ok(Sampling::Scene(0.4)));
        assert_eq!(parse_sampling("scene=0.25"), Ok(Sampling::Scene(0.25)));
        for rule in [
            Sampling::All,
            Sampling::Fps(0.5),
            Sampling::EveryNth(3),
            Sampling::Keyframes,
            Sampling::Scene(0.3),
        ] {
            assert_eq!(parse_sampling(&sampling_text(rule)), Ok(rule));
        }
        for bad in [
            "fps=0",
            "fps=-1",
            "fps=nan",
            "every=0",
            "every=x",
            "most",
            "fps",
            "scene=0",
            "scene=1",
            "scene=x",
            "keyframes=2",
        ] {
            assert!(parse_sampling(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn payload_flags() {
        assert_eq!(parse_payload("raw"), Ok(Payload::Raw));
        assert_eq!(parse_payload("zstd"), Ok(Payload::Zstd));
        assert_eq!(parse_payload("jpeg=85"), Ok(Payload::Jpeg(85)));
        for p in [
            Payload::Raw,
            Payload::Zstd,
            Payload::Jpeg(1),
            Payload::Jpeg(100),
        ] {
            assert_eq!(parse_payload(&payload_text(p)), Ok(p));
        }
        for bad in ["", "jpeg", "jpeg=0", "jpeg=101", "jpeg=x", "png", "zstd=3"] {
            assert!(parse_payload(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn every_setting_changes_the_fingerprint() -> anyhow::Result<()> {
        let base = Pipeline::resolve(&args(), &source())?;
        assert_eq!(base.output.to_string(), "s3://b/outputs/");
        let mut variants = Vec::new();
        let mut a = args();
        a.task = "caption.blip-large".into();
        variants.push(a);
        let mut a = args();
        a.sample = Sampling::Fps(1.0);
        variants.push(a);
        let mut a = args();
        a.output = Some("s3://b/other".into());
        variants.push(a);
        let mut a = args();
        a.model_id = "v2".into();
        variants.push(a);
        let mut a = args();
        a.prompt = "a picture of".into();
        variants.push(a);
        let mut a = args();
        a.max_tokens = 20;
        variants.push(a);
        let mut a = args();
        a.payload = Payload::Jpeg(90);
        variants.push(a);
        for v in &variants {
            let other = Pipeline::resolve(v, &source())?;
            assert_ne!(other.fingerprint(), base.fingerprint(), "{v:?}");
        }
        // A lossless payload leaves outputs, and so the fingerprint, alone.
        let mut a = args();
        a.payload = Payload::Zstd;
        assert_eq!(
            Pipeline::resolve(&a, &source())?.fingerprint(),
            base.fingerprint()
        );
        // Stable across processes: the fingerprint is a pure function.
        assert_eq!(
            base.fingerprint(),
            Pipeline::resolve(&args(), &source())?.fingerprint()
        );
        Ok(())
    }

    #[test]
    fn video_ids_follow_object_bytes_and_pipeline() -> anyhow::Result<()> {
        let p = Pipeline::resolve(&args(), &source())?;
        let a = ObjectRef {
            bucket: "b".into(),
            key: "videos/a.mp4".into(),
        };
        assert_eq!(p.video_id(&a, Some("e1")), p.video_id(&a, Some("e1")));
        assert_ne!(p.video_id(&a, Some("e1")), p.video_id(&a, Some("e2")));
        assert!(p.is_own_or_marker(&ObjectRef {
            bucket: "b".into(),
            key: "outputs/status/x.json".into()
        }));
        assert!(!p.is_own_or_marker(&a));
        Ok(())
    }
}
