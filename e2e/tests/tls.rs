//! TLS end to end: the fleet talks `amqps://` to RabbitMQ's own TLS
//! listener and `https://` to the store, both with certificates of a CA
//! the test makes, trusted only through `--amqp-ca-file` and
//! `--s3-ca-file`. The store's HTTPS front is socat over s3s-fs; libav reads
//! the presigned URL over HTTPS too, verifying the certificate. Without
//! the CA files each connection is refused, and the error says why.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, env, free_addr, rabbitmqctl};

const TASK: &str = "embed.effnet-lite0";

/// A CA and a certificate for localhost / 127.0.0.1 signed by it.
fn certificates(dir: &Path) -> anyhow::Result<()> {
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=framefleet test CA",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])?;
    // RabbitMQ runs as its own user and must read the key.
    for file in ["ca.pem", "server.pem", "server.key"] {
        Command::new("chmod")
            .arg("644")
            .arg(dir.join(file))
            .status()?;
    }
    Ok(())
}

/// RabbitMQ's TLS listener on `port`, started at runtime and stopped on drop.
struct TlsListener {
    port: u16,
}

impl TlsListener {
    fn start(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let file = |name: &str| dir.join(name).display().to_string();
        rabbitmqctl(&[
            "eval",
            &format!(
                r#"rabbit_networking:start_ssl_listener({{"127.0.0.1", {port}}}, [{{certfile, "{}"}}, {{keyfile, "{}"}}, {{cacertfile, "{}"}}, {{verify, verify_none}}, {{fail_if_no_peer_cert, false}}], 2)."#,
                file("server.pem"),
                file("server.key"),
                file("ca.pem")
            ),
        ])?;
        Ok(Self { port })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let stop = format!(
            r#"rabbit_networking:stop_tcp_listener({{"127.0.0.1", {}}})."#,
            self.port
        );
        rabbitmqctl(&["eval", &stop]).ok();
    }
}

/// An HTTPS front for the plain-HTTP S3 server, killed on drop.
struct HttpsFront(Child);

impl HttpsFront {
    fn start(dir: &Path, port: u16, backend: &str) -> anyhow::Result<Self> {
        let cert = dir.join("server.pem").display().to_string();
        let key = dir.join("server.key").display().to_string();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={cert},key={key}"
            ))
            .arg(format!("TCP:{backend}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self(child))
    }
}

impl Drop for HttpsFront {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn port() -> anyhow::Result<u16> {
    Ok(free_addr()?
        .rsplit_once(':')
        .map(|(_, p)| p.parse())
        .transpose()?
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_runs_over_amqps_and_https_with_a_private_ca() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("tls").await?;
    let dir: PathBuf = fleet.work.join("tls");
    std::fs::create_dir_all(&dir)?;
    certificates(&dir)?;
    let amqps_port = port()?;
    let _listener = TlsListener::start(&dir, amqps_port)?;
    let https_port = port()?;
    let plain = env("FF_S3_ENDPOINT")?;
    let backend = plain.trim_start_matches("http://").to_owned();
    let _front = HttpsFront::start(&dir, https_port, &backend)?;

    let amqps = format!("amqps://guest:guest@localhost:{amqps_port}/%2f");
    let https = format!("https://localhost:{https_port}");
    let ca = dir.join("ca.pem").display().to_string();
    let trusted = [
        ("FF_AMQP_URL", amqps.as_str()),
        ("FF_AMQP_CA_FILE", ca.as_str()),
        ("FF_S3_ENDPOINT", https.as_str()),
        ("FF_S3_CA_FILE", ca.as_str()),
    ];

    // Without the CA, neither connection is made, and the error says why.
    let source = format!("s3://{}/in/", fleet.bucket);
    let submit = [
        "submit",
        source.as_str(),
        "--task",
        TASK,
        "--sample",
        "every=9",
    ];
    let untrusted = fleet.output("producer", &submit, &trusted[..1])?;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        !untrusted.status.success(),
        "amqps without the CA connected"
    );
    assert!(
        stderr.contains("cannot connect to RabbitMQ at amqps://guest:***@localhost")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    let untrusted = fleet.output("producer", &submit, &[trusted[0], trusted[1], trusted[2]])?;
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        !untrusted.status.success(),
        "https without the CA listed the bucket"
    );
    assert!(stderr.contains(&fleet.bucket), "{stderr}");

    fleet
        .upload(
            "in/vtest.avi",
            Path::new(OPENCV_DATA).join("vtest.avi").as_path(),
        )
        .await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    fleet.spawn_with_env("producer", "producer", &["run"], &trusted)?;
    fleet.spawn_with_env("collector", "producer", &["collect"], &trusted)?;
    fleet.spawn_with_env(
        "worker",
        "worker",
        &["--task", TASK, "--model-dir", &model],
        &trusted[..2],
    )?;
    let submitted = fleet.output("producer", &submit, &trusted)?;
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let status = fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(300))
        .await?;
    assert_eq!(status[0]["state"], "done", "{}", status[0]);
    assert_eq!(
        fleet.embedded_frames("in/vtest.avi").await?,
        (0..795).step_by(9).collect::<Vec<u64>>(),
        "every sampled frame exactly once, in order"
    );
    // Every fleet connection came in over TLS.
    let connections = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "name",
        "ssl",
        "port",
    ])?;
    let ours: Vec<&str> = connections
        .lines()
        .filter(|l| l.split('\t').next_back() == Some(amqps_port.to_string().as_str()))
        .collect();
    assert!(
        ours.len() >= 3,
        "producer, collector and worker over TLS: {connections}"
    );
    assert!(ours.iter().all(|l| l.contains("true")), "{connections}");
    fleet.cleanup(&[TASK]).await
}
