//! Every fleet process serves Prometheus metrics, and after a run the
//! scraped counters equal what was actually processed.

use std::time::Duration;

use e2e::{Fleet, OPENCV_DATA, env, free_addr, http_get};

const TASK: &str = "embed.effnet-lite0";

fn scrape(addr: &str) -> anyhow::Result<String> {
    http_get(addr, "/metrics")
}

/// Sum of a metric's samples whose labels contain every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let metric = series.split('{').next().unwrap_or_default();
            metric == name && labels.iter().all(|label| series.contains(label))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn scraped_counters_equal_the_work_done() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("metrics").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let [producer, collector, worker, watch] =
        [free_addr()?, free_addr()?, free_addr()?, free_addr()?];
    fleet.spawn(
        "producer",
        "producer",
        &["--metrics-addr", &producer, "run", "--job-frames", "16"],
    )?;
    fleet.spawn(
        "collector",
        "producer",
        &["--metrics-addr", &collector, "collect"],
    )?;
    fleet.spawn(
        "worker",
        "worker",
        &[
            "--task",
            TASK,
            "--model-dir",
            &model,
            "--metrics-addr",
            &worker,
        ],
    )?;
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet.spawn(
        "watch",
        "producer",
        &[
            "--metrics-addr",
            &watch,
            "watch",
            &source,
            "--task",
            TASK,
            "--sample",
            "every=10",
            "--interval",
            "500ms",
        ],
    )?;
    fleet
        .upload(
            "in/vtest.avi",
            std::path::Path::new(OPENCV_DATA)
                .join("vtest.avi")
                .as_path(),
        )
        .await?;
    let status = fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(300))
        .await?;
    let s = &status[0];
    assert_eq!(s["state"], "done", "{s}");
    let (decoded, frames, jobs) = (
        s["decoded"].as_f64().unwrap_or_default(),
        s["frames"].as_f64().unwrap_or_default(),
        s["jobs"].as_f64().unwrap_or_default(),
    );
    assert_eq!((frames, jobs), (80.0, 5.0), "{s}");

    // A malformed task is dead-lettered and counted by cause.
    fleet
        .publish_raw(fleet::Topology::VIDEOS_KEY, b"garbage")
        .await?;
    fleet
        .wait_for_log(
            "producer",
            &["message dead-lettered"],
            Duration::from_secs(60),
        )
        .await?;

    let p = scrape(&producer)?;
    assert_eq!(
        value(&p, "framefleet_frames_decoded_total", &[]),
        decoded,
        "{p}"
    );
    assert_eq!(
        value(&p, "framefleet_frames_published_total", &[]),
        frames,
        "{p}"
    );
    assert_eq!(
        value(&p, "framefleet_jobs_published_total", &[]),
        jobs,
        "{p}"
    );
    assert_eq!(value(&p, "framefleet_decode_errors_total", &[]), 0.0, "{p}");
    assert_eq!(
        value(
            &p,
            "framefleet_failures_total",
            &["kind=\"dead_letter\"", "cause=\"bad_magic\""]
        ),
        1.0,
        "{p}"
    );
    assert!(p.contains("process=\"producer\""), "{p}");

    let w = scrape(&worker)?;
    assert_eq!(
        value(&w, "framefleet_frames_inferred_total", &[]),
        frames,
        "{w}"
    );
    assert_eq!(value(&w, "framefleet_jobs_acked_total", &[]), jobs, "{w}");
    assert_eq!(value(&w, "framefleet_batch_frames_sum", &[]), frames, "{w}");
    assert!(
        value(&w, "framefleet_model_seconds_count", &[]) >= 1.0,
        "{w}"
    );
    assert!(
        w.contains("framefleet_model_seconds_bucket"),
        "histogram buckets: {w}"
    );

    let c = scrape(&collector)?;
    assert_eq!(
        value(&c, "framefleet_videos_finished_total", &["state=\"done\""]),
        1.0,
        "{c}"
    );

    let v = scrape(&watch)?;
    assert_eq!(value(&v, "framefleet_videos_queued_total", &[]), 1.0, "{v}");

    // Every exposed name is one fleet::metrics declares: the list that
    // dashboards and scrape configs are checked against.
    for text in [&p, &w, &c, &v] {
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(
                fleet::metrics::ALL.contains(&name),
                "undeclared metric {name}"
            );
        }
    }
    fleet.cleanup(&[TASK]).await
}
