//! The bucket: client setup, object URLs, listing, and bounded-memory
//! streaming reads and writes.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use aws_sdk_s3::{
    Client,
    presigning::PresigningConfig,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier},
};
use aws_smithy_http_client::tls;
use schema::ObjectRef;

/// Where the store is. Credentials and region come from the standard
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`.
#[derive(Clone, Debug, clap::Args)]
pub struct S3Args {
    /// Endpoint of a self-hosted S3-compatible store (path-style addressing).
    /// Leave unset for AWS S3.
    #[arg(long, env = "FF_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// How long `run` and `collect` wait out a failing store (retrying with
    /// backoff, holding the message) before requeueing it, which counts
    /// against the queue's delivery limit of 5.
    #[arg(long, env = "FF_STORE_RETRY", default_value = "2m", value_parser = humantime::parse_duration)]
    pub store_retry: Duration,

    /// PEM file of a CA to trust for an `https://` endpoint whose
    /// certificate the system's trust store does not cover (the SDK's
    /// client and libav's reads both verify against it).
    #[arg(long, env = "FF_S3_CA_FILE")]
    pub s3_ca_file: Option<PathBuf>,
}

pub async fn client(args: &S3Args) -> anyhow::Result<Client> {
    let shared = aws_config::from_env().load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(true);
    if let Some(path) = &args.s3_ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the store's CA file {}", path.display()))?;
        let tls = tls::TlsContext::builder()
            .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
            .build()
            .with_context(|| format!("{} is not a usable CA certificate", path.display()))?;
        config = config.http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(tls)
                .build_https(),
        );
    }
    if shared.region().is_none() {
        config = config.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    if let Some(endpoint) = &args.s3_endpoint {
        config = config.endpoint_url(endpoint);
    }
    Ok(Client::from_conf(config.build()))
}

/// Parses `s3://bucket/prefix`.
pub fn parse_url(url: &str) -> anyhow::Result<ObjectRef> {
    let rest = url
        .strip_prefix("s3://")
        .with_context(|| format!("{url:?} is not an s3://BUCKET/PREFIX URL"))?;
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(!bucket.is_empty(), "{url:?} names no bucket");
    Ok(ObjectRef {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    })
}

/// A time-limited GET URL that libavformat can read with ranged requests.
pub async fn presigned_get(
    client: &Client,
    object: &ObjectRef,
    valid_for: Duration,
) -> anyhow::Result<String> {
    let config = PresigningConfig::expires_in(valid_for)?;
    let request = client
        .get_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .presigned(config)
        .await
        .with_context(|| format!("cannot presign {object}"))?;
    Ok(request.uri().to_owned())
}

/// ETags arrive quoted in S3 responses and bare in event notifications;
/// they are compared bare.
pub fn bare_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_owned()
}

/// One listed object: its key and bare ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// Some stores (s3s-fs) leave it out of listings; HEAD has it.
    pub etag: Option<String>,
    /// Changes whenever the object does, as far as the listing can tell:
    /// the ETag, or else size and modification time.
    pub stamp: String,
}

/// The objects under a prefix, one page (≤ 1,000 keys) at a time, so that
/// memory does not grow with the prefix.
pub struct Pages {
    client: Client,
    bucket: String,
    prefix: String,
    /// `None` before the first page; `Some(None)` after the last one.
    next_token: Option<Option<String>>,
}

impl Pages {
    pub fn new(client: &Client, bucket: &str, prefix: &str) -> Self {
        Self {
            client: client.clone(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            next_token: None,
        }
    }

    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<Listed>>> {
        let token = match &self.next_token {
            Some(None) => return Ok(None),
            Some(Some(token)) => Some(token.clone()),
            None => None,
        };
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .set_continuation_token(token)
            .send()
            .await
            .with_context(|| format!("cannot list s3://{}/{}", self.bucket, self.prefix))?;
        self.next_token = Some(
            page.next_continuation_token()
                .filter(|_| page.is_truncated() == Some(true))
                .map(str::to_owned),
        );
        Ok(Some(
            page.contents()
                .iter()
                .filter_map(|o| {
                    let etag = o.e_tag().map(bare_etag);
                    let stamp = etag.clone().unwrap_or_else(|| {
                        let modified = o.last_modified().map(|t| t.as_nanos());
                        format!("{:?} bytes, modified {modified:?}", o.size())
                    });
                    Some(Listed {
                        key: o.key()?.to_owned(),
                        etag,
                        stamp,
                    })
                })
                .collect(),
        ))
    }
}

/// Every key under `prefix`. For prefixes whose size the caller bounds
/// (one video's parts); anything open-ended uses `Pages`.
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pages = Pages::new(client, bucket, prefix);
    while let Some(page) = pages.next().await? {
        keys.extend(page.into_iter().map(|l| l.key));
    }
    Ok(keys)
}

/// The object's bare ETag (`Some("")` if the store sends none), or `None`
/// if the object does not exist.
pub async fn head_etag(client: &Client, object: &ObjectRef) -> anyhow::Result<Option<String>> {
    match client
        .head_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .send()
        .await
    {
        Ok(out) => Ok(Some(bare_etag(out.e_tag().unwrap_or_default()))),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("cannot read {object}"))),
    }
}

/// The object's bytes, or `None` if it does not exist.
pub async fn get(client: &Client, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let body = out
                .body
                .collect()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?;
            Ok(Some(body.into_bytes().to_vec()))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("cannot get s3://{bucket}/{key}"))),
    }
}

/// The object as a stream, read as it is consumed (memory holds a buffer,
/// not the object), or `None` if it does not exist.
pub async fn open(
    client: &Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<Option<impl tokio::io::AsyncBufRead + Unpin + use<>>> {
    match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(out.body.into_async_read())),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("cannot get s3://{bucket}/{key}"))),
    }
}

pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> anyhow::Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(ByteStream::from(body))
        .send()
        .await
        .with_context(|| format!("cannot put s3://{bucket}/{key}"))?;
    Ok(())
}

pub async fn delete(client: &Client, bucket: &str, key: &str) -> anyhow::Result<()> {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("cannot delete s3://{bucket}/{key}"))?;
    Ok(())
}

/// Deletes `keys` with one DeleteObjects request per 1000 (S3's limit):
/// a video's hundreds of parts go in one round trip, not one each. Fails
/// on the first key the store could not delete.
pub async fn delete_all(client: &Client, bucket: &str, keys: &[String]) -> anyhow::Result<()> {
    for chunk in keys.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .with_context(|| format!("cannot delete {} objects in s3://{bucket}", chunk.len()))?;
        if let Some(e) = out.errors().first() {
            anyhow::bail!(
                "cannot delete s3://{bucket}/{}: {} ({} of {} keys refused)",
                e.key().unwrap_or_default(),
                e.message().or(e.code()).unwrap_or("no reason given"),
                out.errors().len(),
                chunk.len()
            );
        }
    }
    Ok(())
}

/// S3's smallest multipart part (but the last) is 5 MiB.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Writes one object of any size in ≤ 8 MiB of memory: a single PUT when it
/// stays small, a multipart upload otherwise. Nothing is visible under the
/// key until `finish` succeeds.
pub struct ObjectWriter<'a> {
    client: &'a Client,
    bucket: String,
    key: String,
    content_type: &'static str,
    buffer: Vec<u8>,
    upload: Option<(String, Vec<CompletedPart>)>,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(client: &'a Client, bucket: &str, key: &str, content_type: &'static str) -> Self {
        Self {
            client,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            content_type,
            buffer: Vec::new(),
            upload: None,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_BYTES {
            let (id, parts) = match self.upload.take() {
                Some(upload) => upload,
                None => (self.create().await?, Vec::new()),
            };
            let body = std::mem::take(&mut self.buffer);
            let uploaded = self.upload_part(&id, parts.len() + 1, body).await;
            // Kept even on failure, so that `abort` can find the upload.
            let (_, parts) = self.upload.insert((id, parts));
            parts.push(uploaded?);
        }
        Ok(())
    }

    fn context(&self) -> String {
        format!("multipart upload to {}", self.location())
    }

    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Abandons the object: an open multipart upload is aborted so that
    /// its parts do not linger (and cost) in the store. Returns the upload
    /// id it aborted. A failed abort is logged: the store's lifecycle rules
    /// are the last resort then.
    pub async fn abort(mut self) -> Option<String> {
        let (id, _) = self.upload.take()?;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&id)
            .send()
            .await
        {
            Ok(_) => tracing::info!(
                object = self.location(),
                "incomplete multipart upload aborted"
            ),
            Err(e) => tracing::warn!(
                failure = "abort_failed",
                object = self.location(),
                error = %anyhow::Error::from(e),
                "cannot abort an incomplete multipart upload"
            ),
        }
        Some(id)
    }

    async fn create(&self) -> anyhow::Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type(self.content_type)
            .send()
            .await
            .with_context(|| self.context())?;
        Ok(created
            .upload_id()
            .context("store returned no upload id")?
            .to_owned())
    }

    async fn upload_part(
        &self,
        id: &str,
        number: usize,
        body: Vec<u8>,
    ) -> anyhow::Result<CompletedPart> {
        let number = i32::try_from(number).context("too many parts")?;
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .with_context(|| self.context())?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .build())
    }

    pub async fn finish(mut self) -> anyhow::Result<()> {
        let body = std::mem::take(&mut self.buffer);
        let Some((id, parts)) = self.upload.take() else {
            return put(
                self.client,
                &self.bucket,
                &self.key,
                body,
                self.content_type,
            )
            .await;
        };
        let completed = self.complete(&id, parts, body).await;
        if completed.is_err() {
            self.upload = Some((id, Vec::new()));
            self.abort().await;
        }
        completed
    }

    async fn complete(
        &self,
        id: &str,
        mut parts: Vec<CompletedPart>,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        if !body.is_empty() {
            parts.push(self.upload_part(id, parts.len() + 1, body).await?);
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .with_context(|| self.context())?;
        Ok(())
    }
}
