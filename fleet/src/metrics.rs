//! Prometheus metrics, served by every process that is given an address.
//!
//! Names live here, once, so that Prometheus's config, the Grafana
//! dashboard and the e2e test that scrapes the processes all check against
//! the same list. Failures are counted from the log: any `tracing` event
//! with a `failure` field (its kind) increments `framefleet_failures_total`
//! with that kind and the event's optional `cause`, so a failure cannot be
//! logged without being counted, or counted without being logged.

use std::net::SocketAddr;

use clap::Args;
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, filter::filter_fn, layer::Context, registry::LookupSpan};

/// Frames the producer decoded, sampled or not.
pub const FRAMES_DECODED: &str = "framefleet_frames_decoded_total";
/// Sampled frames the producer published in confirmed jobs.
pub const FRAMES_PUBLISHED: &str = "framefleet_frames_published_total";
/// Frame jobs the producer published (confirmed).
pub const JOBS_PUBLISHED: &str = "framefleet_jobs_published_total";
/// Bytes of the pixels in those jobs as published (after `--payload`
/// packing): the broker's load per frame.
pub const JOB_BYTES_PUBLISHED: &str = "framefleet_job_bytes_published_total";
/// Corrupt packets the decoder rejected.
pub const DECODE_ERRORS: &str = "framefleet_decode_errors_total";
/// Frames the worker's model ran on.
pub const FRAMES_INFERRED: &str = "framefleet_frames_inferred_total";
/// Frame jobs the worker acked after their result was confirmed.
pub const JOBS_ACKED: &str = "framefleet_jobs_acked_total";
/// Frames per model batch (histogram).
pub const BATCH_FRAMES: &str = "framefleet_batch_frames";
/// Model time per batch in seconds (histogram).
pub const MODEL_SECONDS: &str = "framefleet_model_seconds";
/// Videos whose status the collector wrote, by `state`.
pub const VIDEOS_FINISHED: &str = "framefleet_videos_finished_total";
/// Video runs queued by `watch` or `submit`.
pub const VIDEOS_QUEUED: &str = "framefleet_videos_queued_total";
/// Publishes the broker refused (a full queue): back-pressure, retried.
pub const PUBLISH_NACKS: &str = "framefleet_publish_nacks_total";
/// Failures by `kind` and `cause` (see the module comment).
pub const FAILURES: &str = "framefleet_failures_total";
/// Broker connections lost and made again (`fleet::reconnecting`).
pub const BROKER_RECONNECTS: &str = "framefleet_broker_reconnects_total";

/// Every metric a Framefleet process may expose, for checks against
/// dashboards and scrape configs.
pub const ALL: &[&str] = &[
    FRAMES_DECODED,
    FRAMES_PUBLISHED,
    JOBS_PUBLISHED,
    JOB_BYTES_PUBLISHED,
    DECODE_ERRORS,
    FRAMES_INFERRED,
    JOBS_ACKED,
    BATCH_FRAMES,
    MODEL_SECONDS,
    VIDEOS_FINISHED,
    VIDEOS_QUEUED,
    PUBLISH_NACKS,
    FAILURES,
    BROKER_RECONNECTS,
];

#[derive(Clone, Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 0.0.0.0:9464.
    /// Off when unset.
    #[arg(long, env = "FF_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Starts the exporter if an address is given; `process` labels every
/// series (producer, collector, worker, watch). Call inside the runtime.
pub fn serve(args: &MetricsArgs, process: &str) -> anyhow::Result<()> {
    let Some(addr) = args.metrics_addr else {
        return Ok(());
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .add_global_label("process", process)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(BATCH_FRAMES.into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(MODEL_SECONDS.into()),
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ],
        )?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Counts every event that carries a `failure` field.
pub struct FailureCounter;

impl FailureCounter {
    /// The layer, filtered to failure callsites whatever the log level:
    /// every other event costs nothing here.
    pub fn layer<S>() -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        Self.with_filter(filter_fn(|meta| meta.fields().field("failure").is_some()))
    }
}

#[derive(Default)]
struct FailureFields {
    kind: Option<String>,
    cause: Option<String>,
}

impl Visit for FailureFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "failure" => self.kind = Some(value.to_owned()),
            "cause" => self.cause = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for FailureCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = FailureFields::default();
        event.record(&mut fields);
        if let Some(kind) = fields.kind {
            let cause = fields.cause.unwrap_or_default();
            metrics::counter!(FAILURES, "kind" => kind, "cause" => cause).increment(1);
        }
    }
}
