//! S3 event notifications as MinIO, Ceph RGW and AWS publish them: a JSON
//! object with `Records`, each naming the bucket and the URL-encoded key.

use percent_encoding::percent_decode_str;
use schema::ObjectRef;
use serde::Deserialize;

use super::Candidate;
use fleet::store::bare_etag;

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
}

/// The objects an event notification says were created. Other events
/// (removals, ACL changes) yield nothing. `Err` says why the payload is not
/// a notification at all.
pub fn created(body: &[u8]) -> Result<Vec<Candidate>, String> {
    let notification: Notification =
        serde_json::from_slice(body).map_err(|e| format!("not an S3 event notification: {e}"))?;
    let mut out = Vec::new();
    for record in notification.records {
        // AWS and MinIO say `s3:ObjectCreated:Put`, Ceph `ObjectCreated:Put`.
        if !record.event_name.contains("ObjectCreated") {
            continue;
        }
        // Keys are form-encoded: `+` is a space, a literal plus is `%2B`.
        let key = percent_decode_str(&record.s3.object.key.replace('+', " "))
            .decode_utf8()
            .map_err(|e| format!("object key {:?} is not UTF-8: {e}", record.s3.object.key))?
            .into_owned();
        out.push(Candidate {
            object: ObjectRef {
                bucket: record.s3.bucket.name,
                key,
            },
            etag: record
                .s3
                .object
                .etag
                .as_deref()
                .map(bare_etag)
                .filter(|e| !e.is_empty()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a MinIO AMQP notification.
    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"framefleet/videos/a b+c.mp4",
        "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"",
        "eventTime":"2026-11-29T01:00:00.000Z","eventName":"s3:ObjectCreated:Put",
        "s3":{"s3SchemaVersion":"1.0","configurationId":"Config",
        "bucket":{"name":"framefleet","arn":"arn:aws:store:::framefleet"},
        "object":{"key":"videos%2Fa+b%2Bc.mp4","size":1024,
        "eTag":"d41d8cd98f00b204e9800998ecf8427e","sequencer":"17A"}}}]}"#;

    #[test]
    fn minio_put_names_the_object() {
        let got = created(MINIO.as_bytes()).expect("parses");
        assert_eq!(
            got,
            [Candidate {
                object: ObjectRef {
                    bucket: "framefleet".into(),
                    key: "videos/a b+c.mp4".into(),
                },
                etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            }]
        );
    }

    #[test]
    fn removals_and_junk() {
        let removed = MINIO.replace("s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete");
        assert_eq!(created(removed.as_bytes()), Ok(vec![]));
        // Ceph's event names lack the `s3:` prefix; a quoted ETag is bared.
        let ceph = MINIO
            .replace(
                "s3:ObjectCreated:Put",
                "ObjectCreated:CompleteMultipartUpload",
            )
            .replace(
                r#""eTag":"d41d8cd98f00b204e9800998ecf8427e""#,
                r#""eTag":"\"abc-2\"""#,
            );
        assert_eq!(
            created(ceph.as_bytes()).expect("ceph")[0].etag.as_deref(),
            Some("abc-2")
        );
        assert!(
            created(b"not json")
                .expect_err("junk is refused")
                .contains("not an S3 event")
        );
        assert!(created(br#"{"Records":[{"eventName":"x"}]}"#).is_err());
    }
}
