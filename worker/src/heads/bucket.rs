//! Heads kept in the bucket: `s3://BUCKET/PREFIX/` holding the same two
//! files as a head directory, so a team shares heads where the embeddings
//! are. `worker head train --out` writes there and `worker head apply
//! --head` reads from there; the fleet's worker reads local directories.

use std::path::{Path, PathBuf};

use anyhow::Context;
use aws_sdk_s3::Client;
use fleet::store;

use super::{Head, NewHead, SPEC, WEIGHTS};

/// Whether a `--out` / `--head` argument names the bucket.
pub fn is_bucket(location: &str) -> bool {
    location.starts_with("s3://")
}

/// The key of `file` under the head's prefix.
fn key(prefix: &str, file: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{file}")
    } else {
        format!("{prefix}/{file}")
    }
}

/// Uploads the head saved in `dir` to `url`: the weights first, so that a
/// reader who finds `head.json` finds the weights it describes.
pub async fn upload(client: &Client, dir: &Path, url: &str) -> anyhow::Result<()> {
    let at = store::parse_url(url)?;
    for (file, content_type) in [
        (WEIGHTS, "application/octet-stream"),
        (SPEC, "application/json"),
    ] {
        let path = dir.join(file);
        let body =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        store::put(client, &at.bucket, &key(&at.key, file), body, content_type).await?;
    }
    Ok(())
}

/// Saves `head` to `out`: a directory, or a bucket prefix (`client` is
/// needed then).
pub async fn save(head: &NewHead, out: &str, client: Option<&Client>) -> anyhow::Result<()> {
    if !is_bucket(out) {
        return head.save(Path::new(out));
    }
    let client = client.context("a store client is needed to write to the bucket")?;
    let scratch = ScratchDir::new()?;
    head.save(&scratch.0)?;
    upload(client, &scratch.0, out).await
}

/// Loads the head at `location`: a local directory, or a bucket prefix
/// whose two files are fetched into a scratch directory for the load.
pub async fn load(client: &Client, location: &str) -> anyhow::Result<Head> {
    if !is_bucket(location) {
        return Head::load(Path::new(location));
    }
    let at = store::parse_url(location)?;
    let scratch = ScratchDir::new()?;
    for file in [SPEC, WEIGHTS] {
        let bytes = store::get(client, &at.bucket, &key(&at.key, file))
            .await?
            .with_context(|| format!("{location} holds no {file}"))?;
        std::fs::write(scratch.0.join(file), bytes)?;
    }
    Head::load(&scratch.0).with_context(|| format!("the head at {location}"))
}

/// A directory of our own under the system temp dir, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("framefleet-head-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
