//! `producer submit`: one `VideoTask` per object under a prefix.

use anyhow::Context;
use schema::{Message, ObjectRef, Sampling, VideoTask};
use uuid::Uuid;

use fleet::{Publisher, Topology};

/// Parses `all`, `fps=F` or `every=N`.
pub fn parse_sampling(text: &str) -> Result<Sampling, String> {
    let bad = || format!("sampling {text:?} is not all, fps=F (F > 0) or every=N (N ≥ 1)");
    match text.split_once('=') {
        None if text == "all" => Ok(Sampling::All),
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

/// Output prefixes always end in `/` so that keys join cleanly.
pub fn normalize_prefix(mut output: ObjectRef) -> ObjectRef {
    if !output.key.is_empty() && !output.key.ends_with('/') {
        output.key.push('/');
    }
    output
}

pub struct Submission {
    pub source: ObjectRef,
    pub output: ObjectRef,
    pub task: String,
    pub sampling: Sampling,
}

/// Enqueues every object under the source prefix, except the output
/// prefix's own objects and folder markers. Returns how many were enqueued.
pub async fn submit(
    s3: &aws_sdk_s3::Client,
    publisher: &Publisher,
    sub: &Submission,
) -> anyhow::Result<usize> {
    schema::known_task(&sub.task).with_context(|| format!("unknown task {}", sub.task))?;
    let keys = crate::s3::list(s3, &sub.source.bucket, &sub.source.key).await?;
    let mut count = 0;
    for key in keys {
        let is_output = sub.output.bucket == sub.source.bucket
            && key.starts_with(&sub.output.key)
            && !sub.output.key.is_empty();
        if key.ends_with('/') || is_output {
            continue;
        }
        let task = VideoTask {
            video_id: Uuid::new_v4(),
            source: ObjectRef {
                bucket: sub.source.bucket.clone(),
                key,
            },
            task: sub.task.clone(),
            sampling: sub.sampling,
            output: sub.output.clone(),
        };
        publisher
            .publish(
                Topology::VIDEOS_KEY,
                &schema::encode(&Message::VideoTask(task.clone()))?,
                Default::default(),
            )
            .await?;
        tracing::info!(video = %task.source, id = %task.video_id, "submitted");
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_flags() {
        assert_eq!(parse_sampling("all"), Ok(Sampling::All));
        assert_eq!(parse_sampling("fps=2.5"), Ok(Sampling::Fps(2.5)));
        assert_eq!(parse_sampling("every=10"), Ok(Sampling::EveryNth(10)));
        for bad in [
            "fps=0", "fps=-1", "fps=nan", "every=0", "every=x", "most", "fps",
        ] {
            assert!(parse_sampling(bad).is_err(), "{bad} must be refused");
        }
    }
}
