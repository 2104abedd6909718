//! The one decision `submit` and `watch` share: is this object, at these
//! bytes, under this pipeline, already done, already queued, or due?

use std::time::Duration;

use anyhow::Context;
use schema::{Message, ObjectRef, Provenance, VideoTask};
use uuid::Uuid;

use fleet::{Publisher, Topology};

use super::pipeline::{Pipeline, PipelineArgs};
use fleet::{
    layout::Layout,
    status::{Claim, Status, now_unix_ms},
    store,
};

/// A bucket object as listed or announced: its key and ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub object: ObjectRef,
    /// Bare (`store::bare_etag`); `None` when the listing left it out, and
    /// `consider` asks the store.
    pub etag: Option<String>,
}

/// What became of one candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A status records these bytes and this pipeline.
    Done,
    /// A live claim says this run is queued or running.
    InFlight,
    /// The object was deleted since it was listed.
    Gone,
    /// Queued now, as this run.
    Queued(Uuid),
}

#[derive(Clone, Debug, clap::Args)]
pub struct ClaimArgs {
    /// A claim older than this whose run never wrote a status is presumed
    /// lost (dead-lettered, purged) and the run is queued again.
    #[arg(long, env = "FF_CLAIM_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub claim_ttl: Duration,
}

pub struct Enqueuer<'a> {
    pub s3: &'a aws_sdk_s3::Client,
    pub publisher: &'a Publisher,
    pub pipeline: Pipeline,
    pub claim_ttl: Duration,
    /// Queue even what is done or in flight, as a new run.
    pub force: bool,
}

impl<'a> Enqueuer<'a> {
    pub fn new(
        s3: &'a aws_sdk_s3::Client,
        publisher: &'a Publisher,
        pipeline: &PipelineArgs,
        source: &ObjectRef,
        claims: &ClaimArgs,
        force: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            s3,
            publisher,
            pipeline: Pipeline::resolve(pipeline, source)?,
            claim_ttl: claims.claim_ttl,
            force,
        })
    }

    pub async fn consider(&self, c: &Candidate) -> anyhow::Result<Outcome> {
        let etag = match &c.etag {
            Some(etag) => Some(etag.clone()),
            None => match store::head_etag(self.s3, &c.object).await? {
                None => return Ok(Outcome::Gone),
                Some(etag) => Some(etag).filter(|e| !e.is_empty()),
            },
        };
        let c = &Candidate {
            object: c.object.clone(),
            etag,
        };
        let fingerprint = self.pipeline.fingerprint();
        let layout = Layout {
            output: &self.pipeline.output,
            source_key: &c.object.key,
        };
        let bucket = &self.pipeline.output.bucket;
        let video_id = if self.force {
            Uuid::new_v4()
        } else {
            // The claim before the status: the collector writes the status,
            // then releases the claim, so a claim found gone means the
            // status read next is there. The other order raced: a status
            // read just before it was written and a claim read just after
            // its release queued a finished run again (seen in
            // e2e/tests/discovery.rs).
            let video_id = self.pipeline.video_id(&c.object, c.etag.as_deref());
            let mut expired = None;
            if let Some(claim) = store::get(self.s3, bucket, &layout.claim()).await?
                && let Ok(claim) = serde_json::from_slice::<Claim>(&claim)
                && claim.video_id == video_id
            {
                let age = now_unix_ms().saturating_sub(claim.claimed_at_unix_ms);
                if u128::from(age) < self.claim_ttl.as_millis() {
                    return Ok(Outcome::InFlight);
                }
                expired = Some(age);
            }
            if let Some(status) = store::get(self.s3, bucket, &layout.status()).await?
                && let Ok(status) = serde_json::from_slice::<Status>(&status)
                && status.etag == c.etag
                && status.fingerprint.as_deref() == Some(fingerprint.as_str())
            {
                return Ok(Outcome::Done);
            }
            if let Some(age) = expired {
                tracing::warn!(failure = "claim_expired", video = %c.object, %video_id, age_s = age / 1000, "claim expired without a status, queueing the run again");
            }
            video_id
        };
        let task = VideoTask {
            video_id,
            source: c.object.clone(),
            task: self.pipeline.task.clone(),
            sampling: self.pipeline.sampling,
            payload: self.pipeline.payload,
            output: self.pipeline.output.clone(),
            provenance: Provenance {
                etag: c.etag.clone(),
                fingerprint: fingerprint.clone(),
            },
        };
        self.publisher
            .publish(
                Topology::VIDEOS_KEY,
                &schema::encode(&Message::VideoTask(task))?,
                Default::default(),
            )
            .await
            .with_context(|| format!("queueing {}", c.object))?;
        // After the confirm: a crash in between queues the run twice, which
        // the deterministic video id makes harmless; the other order could
        // leave a claim for a run that was never queued.
        let claim = Claim {
            video_id,
            etag: c.etag.clone(),
            fingerprint,
            claimed_at_unix_ms: now_unix_ms(),
        };
        store::put(
            self.s3,
            bucket,
            &layout.claim(),
            serde_json::to_vec(&claim)?,
            "application/json",
        )
        .await?;
        metrics::counter!(fleet::metrics::VIDEOS_QUEUED).increment(1);
        Ok(Outcome::Queued(video_id))
    }
}
