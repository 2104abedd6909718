//! `producer submit`: a one-off pass over a prefix, with the same skip
//! logic as `watch`: a video already done or in flight under the same
//! pipeline is not queued again unless forced.

use schema::ObjectRef;

use fleet::store;

use crate::discover::{Candidate, Enqueuer, Outcome};

/// What one pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub queued: usize,
    pub done: usize,
    pub in_flight: usize,
}

/// Considers every object under `source` except the pipeline's own
/// outputs and folder markers. Every object is queued, video-looking or
/// not: a one-off run names its prefix deliberately, and a non-video gets
/// a failed status that says why.
pub async fn submit(enqueuer: &Enqueuer<'_>, source: &ObjectRef) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut pages = store::Pages::new(enqueuer.s3, &source.bucket, &source.key);
    while let Some(page) = pages.next().await? {
        for listed in page {
            let candidate = Candidate {
                object: ObjectRef {
                    bucket: source.bucket.clone(),
                    key: listed.key,
                },
                etag: listed.etag,
            };
            if enqueuer.pipeline.is_own_or_marker(&candidate.object) {
                continue;
            }
            match enqueuer.consider(&candidate).await? {
                Outcome::Queued(id) => {
                    tracing::info!(video = %candidate.object, %id, "submitted");
                    tally.queued += 1;
                }
                Outcome::Done => {
                    tracing::info!(video = %candidate.object, "already done with this pipeline, skipped");
                    tally.done += 1;
                }
                Outcome::InFlight => {
                    tracing::info!(video = %candidate.object, "already queued, skipped");
                    tally.in_flight += 1;
                }
                Outcome::Gone => {
                    tracing::info!(video = %candidate.object, "deleted while listing, skipped");
                }
            }
        }
    }
    Ok(tally)
}
