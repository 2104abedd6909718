//! docker-compose.yml, proven without a container engine: the file
//! validates, every fleet service's own command and environment runs as a
//! local process against the local broker and store (endpoints and
//! credentials mapped to them), a dropped video comes out the other end,
//! and the Prometheus config and Grafana dashboard name only metrics the
//! processes and RabbitMQ's plugin really expose.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use e2e::{Fleet, env, ffmpeg, free_addr, http_get};
use serde_json::Value;

/// The fleet services `docker compose up` starts (no profile).
const FLEET: &[&str] = &["watch", "producer", "collector", "worker-cpu"];
/// Services behind profiles: their flags are checked, they are not run.
const PROFILED: &[&str] = &["worker-gpu0", "watch-caption", "worker-caption"];
/// Variables the test points at its own broker, store and ports.
const MAPPED: &[&str] = &[
    "FF_AMQP_URL",
    "FF_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "FF_NAMESPACE",
    "FF_METRICS_ADDR",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Debian's python3: docker-compose depends on its python3-yaml, so it is
/// there whenever `docker-compose` is.
fn yaml_to_json(yaml: &[u8]) -> anyhow::Result<Value> {
    let mut child = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("piped").write_all(yaml)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "python3 could not read the YAML");
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The compose file as docker-compose resolves it (anchors, merges,
/// variable defaults), which also validates it.
fn resolved_compose() -> anyhow::Result<Value> {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .arg("config")
        .env_remove("FF_RABBITMQ_USER")
        .env_remove("FF_RABBITMQ_PASSWORD")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_to_json(&out.stdout)
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(env("FF_BIN_DIR")?).join(name))
}

/// Every `[env: NAME=` the binaries document, across their subcommands.
fn documented_variables() -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for args in [
        vec!["producer", "--help"],
        vec!["producer", "run", "--help"],
        vec!["producer", "collect", "--help"],
        vec!["producer", "watch", "--help"],
        vec!["worker", "--help"],
    ] {
        let out = Command::new(bin(args[0])?).args(&args[1..]).output()?;
        let help = String::from_utf8_lossy(&out.stdout);
        for part in help.split("[env: ").skip(1) {
            names.insert(part.split('=').next().unwrap_or_default().to_owned());
        }
    }
    Ok(names)
}

/// Metric names a PromQL text or a scrape mentions.
fn metric_names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len().max(1)..];
        names.insert(name);
    }
    names
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|b| fleet::metrics::ALL.contains(b))
        .unwrap_or(name)
}

fn as_args(command: &Value) -> anyhow::Result<Vec<String>> {
    command
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("command is not a list: {command}"))?
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("{a}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_services_run_as_written() -> anyhow::Result<()> {
    let compose = resolved_compose()?;
    let services = &compose["services"];
    let documented = documented_variables()?;
    let mut fleet = Fleet::new("compose").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    // The store's bucket and the image's model path, mapped to the test's.
    let bucket = format!("s3://{}/", fleet.bucket);
    let map_arg = |a: &str| {
        a.replace("s3://framefleet/", &bucket)
            .replace("/models/effnet-lite0", &model)
    };

    for name in FLEET.iter().chain(PROFILED) {
        let service = &services[*name];
        let environment = service["environment"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("{name} has no environment"))?;
        for var in environment.keys() {
            if var.starts_with("FF_") {
                assert!(documented.contains(var), "{name}: no binary reads {var}");
            }
        }
        for var in MAPPED {
            assert!(environment.contains_key(*var), "{name} lacks {var}");
        }
        assert_eq!(environment["FF_METRICS_ADDR"], "0.0.0.0:9464", "{name}");
        let args = as_args(&service["command"])?;
        // Flags of services not run here must still parse.
        if PROFILED.contains(name) {
            let out = Command::new(bin(&args[0])?)
                .args(args[1..].iter().map(|a| map_arg(a)))
                .arg("--help")
                .output()?;
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let gpu = &services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(gpu["device_ids"][0], "0");
    assert!(as_args(&services["worker-gpu0"]["command"])?.contains(&"cuda:0".to_owned()));

    // A video in the bucket before the fleet starts: the watcher's first
    // poll takes it (its compose interval is 10 s), and a text file with a
    // video's extension fails, so that failures are counted.
    let clip = fleet.work.join("clip.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10:duration=2",
        "-c:v",
        "libx264",
        &clip.to_string_lossy(),
    ])?;
    fleet.upload("videos/clip.mp4", &clip).await?;
    std::fs::write(fleet.work.join("notes.mp4"), "not a video")?;
    fleet
        .upload("videos/notes.mp4", &fleet.work.join("notes.mp4"))
        .await?;

    let mut metrics = Vec::new();
    for name in FLEET {
        let service = &services[*name];
        let addr = free_addr()?;
        let mut vars: Vec<(String, String)> = service["environment"]
            .as_object()
            .expect("checked above")
            .iter()
            .filter(|(k, _)| !MAPPED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        vars.push(("FF_METRICS_ADDR".into(), addr.clone()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<String> = as_args(&service["command"])?
            .iter()
            .map(|a| map_arg(a))
            .collect();
        let rest: Vec<&str> = args[1..].iter().map(String::as_str).collect();
        fleet.spawn_with_env(name, &args[0], &rest, &vars)?;
        metrics.push((*name, addr));
    }
    // A flag compose passes that a binary no longer knows ends it at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for name in FLEET {
        if let Some(code) = fleet.exited(name)? {
            anyhow::bail!("{name} exited with {code}:\n{}", fleet.log(name));
        }
    }
    let status = fleet
        .wait_for_status(
            &["videos/clip.mp4", "videos/notes.mp4"],
            Duration::from_secs(300),
        )
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    assert_eq!(status[0]["frames"], 20);
    assert_eq!(status[1]["state"], "failed", "{}", status[1]);
    assert!(
        fleet
            .get("outputs/embeddings/videos/clip.mp4.npy")
            .await?
            .is_some()
    );
    // FF_LOG_FORMAT=json from compose: every log line is a JSON object.
    for name in FLEET {
        let log = fleet.log(name);
        assert!(!log.is_empty(), "{name} logged nothing");
        for line in log.lines() {
            assert!(
                serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
                "{name}: not JSON: {line}"
            );
        }
    }

    // What the processes expose, by scraping them as Prometheus would.
    let mut exposed = BTreeSet::new();
    for (name, addr) in &metrics {
        let text = http_get(addr, "/metrics")?;
        assert!(text.contains("process="), "{name}: {text}");
        exposed.extend(
            metric_names(&text, "framefleet_")
                .iter()
                .map(|n| base_name(n).to_owned()),
        );
    }
    let prometheus = yaml_to_json(&std::fs::read(
        root().join("ops/prometheus/prometheus.yml"),
    )?)?;
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fleet_job = jobs
        .iter()
        .find(|j| j["job_name"] == "framefleet")
        .ok_or_else(|| anyhow::anyhow!("no framefleet scrape job"))?;
    let targets: BTreeSet<String> = fleet_job["static_configs"][0]["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    for name in FLEET.iter().chain(PROFILED) {
        assert!(
            targets.contains(&format!("{name}:9464")),
            "Prometheus does not scrape {name}"
        );
    }
    // RabbitMQ's plugin, asked exactly as the rabbitmq job asks it.
    let rabbit_job = jobs
        .iter()
        .find(|j| j["job_name"] == "rabbitmq")
        .ok_or_else(|| anyhow::anyhow!("no rabbitmq scrape job"))?;
    let families: Vec<String> = rabbit_job["params"]["family"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.as_str().map(|f| format!("family={f}")))
        .collect();
    let path = format!(
        "{}?{}",
        rabbit_job["metrics_path"].as_str().unwrap_or("/metrics"),
        families.join("&")
    );
    let rabbit = metric_names(&http_get("127.0.0.1:15692", &path)?, "rabbitmq_");

    let dashboard = std::fs::read_to_string(root().join("ops/grafana/dashboards/framefleet.json"))?;
    let dashboard: Value = serde_json::from_str(&dashboard)?;
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().cloned().unwrap_or_default() {
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            exprs += target["expr"].as_str().unwrap_or_default();
            exprs.push('\n');
        }
    }
    let used = metric_names(&exprs, "framefleet_");
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        let base = base_name(name);
        assert!(
            fleet::metrics::ALL.contains(&base),
            "dashboard uses undeclared {name}"
        );
        assert!(
            exposed.contains(base),
            "dashboard uses {name}, which no process exposed"
        );
    }
    for name in metric_names(&exprs, "rabbitmq_") {
        assert!(
            rabbit.contains(&name),
            "dashboard uses {name}; RabbitMQ exposes {rabbit:?}"
        );
    }
    fleet.cleanup(&["embed.effnet-lite0"]).await
}
