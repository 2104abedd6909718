//! The streaming object writer against a real S3 server (s3s-fs, started
//! by scripts/test.sh): small objects are one PUT, large ones a multipart
//! upload, and either way the bytes read back are the bytes written.

use fleet::store::{self, ObjectWriter, S3Args};

async fn client() -> anyhow::Result<aws_sdk_s3::Client> {
    let endpoint = std::env::var("FF_S3_ENDPOINT")
        .map_err(|_| anyhow::anyhow!("run through scripts/test.sh"))?;
    store::client(&S3Args {
        s3_endpoint: Some(endpoint),
        store_retry: std::time::Duration::ZERO,
        s3_ca_file: None,
    })
    .await
}

async fn roundtrip(size: usize) -> anyhow::Result<()> {
    let client = client().await?;
    let bucket = format!(
        "writer-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    client.create_bucket().bucket(&bucket).send().await?;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let mut writer = ObjectWriter::new(&client, &bucket, "big.bin", "application/octet-stream");
    // Uneven writes, as the collector makes them.
    for chunk in data.chunks(1_000_003) {
        writer.write(chunk).await?;
    }
    writer.finish().await?;
    let read = store::get(&client, &bucket, "big.bin")
        .await?
        .expect("object exists");
    assert!(
        read == data,
        "{size} bytes: read back {} bytes that differ",
        read.len()
    );
    store::delete(&client, &bucket, "big.bin").await?;
    client.delete_bucket().bucket(&bucket).send().await?;
    Ok(())
}

#[tokio::test]
async fn small_objects_are_written_whole() -> anyhow::Result<()> {
    roundtrip(3 * 1024 * 1024).await
}

#[tokio::test]
async fn large_objects_go_through_multipart_upload() -> anyhow::Result<()> {
    roundtrip(21 * 1024 * 1024 + 17).await
}

/// A write abandoned half way leaves no multipart upload behind: the store
/// forgets its parts.
#[tokio::test]
async fn an_abandoned_multipart_upload_is_aborted() -> anyhow::Result<()> {
    let client = client().await?;
    let bucket = format!("abort-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    client.create_bucket().bucket(&bucket).send().await?;
    let mut writer = ObjectWriter::new(&client, &bucket, "big.bin", "application/octet-stream");
    writer.write(&vec![7u8; 9 * 1024 * 1024]).await?;
    let upload = writer.abort().await.expect("a multipart upload was open");
    // Stores answer NoSuchUpload; s3s-fs lists the upload's part files,
    // and there are none left.
    let parts = client
        .list_parts()
        .bucket(&bucket)
        .key("big.bin")
        .upload_id(&upload)
        .send()
        .await;
    assert!(
        parts.as_ref().map_or(true, |p| p.parts().is_empty()),
        "the upload's parts are still stored: {parts:?}"
    );
    assert!(store::get(&client, &bucket, "big.bin").await?.is_none());
    // A small object never opened an upload: nothing to abort.
    let mut small = ObjectWriter::new(&client, &bucket, "small.bin", "application/octet-stream");
    small.write(b"tiny").await?;
    assert_eq!(small.abort().await, None);
    client.delete_bucket().bucket(&bucket).send().await?;
    Ok(())
}
