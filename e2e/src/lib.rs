//! Harness for the end-to-end tests: a fresh bucket and namespace per test,
//! the fleet's binaries as child processes, and helpers to read outputs.
//!
//! Needs (set by `scripts/test.sh`): RabbitMQ at `FF_AMQP_URL`, an S3 server
//! at `FF_S3_ENDPOINT` with `AWS_*` credentials, `FF_TEST_MODEL_DIR`, and the
//! binaries built into `FF_BIN_DIR`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_sdk_s3::{Client, primitives::ByteStream};

pub fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set: run the tests through scripts/test.sh"))
}

pub const OPENCV_DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

/// One test's private bucket and broker namespace; torn down on drop of
/// the processes and by `cleanup`.
pub struct Fleet {
    pub bucket: String,
    pub namespace: String,
    pub s3: Client,
    pub amqp_url: String,
    /// The S3 endpoint the fleet's processes are given.
    pub s3_endpoint: String,
    children: Vec<(String, Child)>,
    pub work: PathBuf,
}

impl Fleet {
    pub async fn new(name: &str) -> anyhow::Result<Self> {
        Self::on_store(name, &env("FF_S3_ENDPOINT")?).await
    }

    /// A fleet whose bucket lives on the S3 server at `endpoint`.
    pub async fn on_store(name: &str, endpoint: &str) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let bucket = format!("{name}-{}", &id[..12]);
        let namespace = format!("fft-{name}-{}", &id[..12]);
        let shared = aws_config::from_env().load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .build();
        let s3 = Client::from_conf(config);
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .context("creating the test bucket")?;
        let work = std::env::temp_dir().join(format!("ff-e2e-{namespace}"));
        std::fs::create_dir_all(&work)?;
        Ok(Self {
            bucket,
            namespace,
            s3,
            amqp_url: env("FF_AMQP_URL")?,
            s3_endpoint: endpoint.to_owned(),
            children: Vec::new(),
            work,
        })
    }

    fn command(&self, bin: &str) -> anyhow::Result<Command> {
        let path = PathBuf::from(env("FF_BIN_DIR")?).join(bin);
        anyhow::ensure!(path.is_file(), "{} is not built", path.display());
        let mut cmd = Command::new(path);
        cmd.env("FF_NAMESPACE", &self.namespace)
            .env("FF_AMQP_URL", &self.amqp_url)
            .env("FF_S3_ENDPOINT", &self.s3_endpoint)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs a command to completion and returns its stdout.
    pub fn run(&self, bin: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(bin)?.args(args).output()?;
        if !out.status.success() {
            bail!(
                "{bin} {args:?} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command with extra environment and returns its whole output,
    /// whatever the exit status.
    pub fn output(
        &self,
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<std::process::Output> {
        Ok(self
            .command(bin)?
            .args(args)
            .envs(env.iter().copied())
            .output()?)
    }

    /// Starts a long-running fleet process; its log goes to `<work>/<label>.log`.
    pub fn spawn(&mut self, label: &str, bin: &str, args: &[&str]) -> anyhow::Result<()> {
        self.spawn_with_env(label, bin, args, &[])
    }

    /// `spawn` with extra environment.
    pub fn spawn_with_env(
        &mut self,
        label: &str,
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.work.join(format!("{label}.log")))?;
        let child = self
            .command(bin)?
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.children.push((label.to_owned(), child));
        Ok(())
    }

    /// A connection to the fleet's broker, as the tests' own client.
    pub async fn connect(&self, name: &str) -> anyhow::Result<lapin::Connection> {
        let broker = fleet::BrokerArgs {
            amqp_url: self.amqp_url.clone(),
            namespace: self.namespace.clone(),
            amqp_ca_file: None,
        };
        Ok(fleet::connect(&broker, name, fleet::Persistence::OneShot).await?)
    }

    /// Sends SIGTERM to a spawned process and waits for it to exit; returns
    /// its status and how long it took.
    pub async fn terminate(
        &mut self,
        label: &str,
        timeout: Duration,
    ) -> anyhow::Result<(std::process::ExitStatus, Duration)> {
        let mut child = self.take(label)?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {label} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                child.kill().ok();
                bail!(
                    "{label} did not exit within {timeout:?} of SIGTERM:\n{}",
                    tail(&self.log(label))
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status of a spawned process that has already ended.
    pub fn exited(&mut self, label: &str) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let (_, child) = self
            .children
            .iter_mut()
            .find(|(l, _)| l == label)
            .context("no such process")?;
        Ok(child.try_wait()?)
    }

    /// Removes a spawned process from the fleet's care.
    fn take(&mut self, label: &str) -> anyhow::Result<Child> {
        let pos = self
            .children
            .iter()
            .position(|(l, _)| l == label)
            .context("no such process")?;
        Ok(self.children.remove(pos).1)
    }

    pub fn kill(&mut self, label: &str) -> anyhow::Result<()> {
        let mut child = self.take(label)?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.work.join(format!("{label}.log"))).unwrap_or_default()
    }

    /// Lines of a process's log that contain every one of `needles`.
    pub fn log_lines(&self, label: &str, needles: &[&str]) -> usize {
        self.log(label)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until a process's log has a line with every one of `needles`.
    pub async fn wait_for_log(
        &self,
        label: &str,
        needles: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.log_lines(label, needles) == 0 {
            if Instant::now() > deadline {
                bail!(
                    "{label} never logged {needles:?} in {timeout:?}:\n{}",
                    tail(&self.log(label))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    pub async fn upload(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let body = ByteStream::from_path(path).await?;
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await?;
        Ok(())
    }

    /// The object's bytes, or `None` where there is no such key.
    ///
    /// A body that fails while streaming is read again, a few times: s3s-fs
    /// keeps an object's data and its checksums in two files, so a read
    /// that overlaps an overwrite (a status the collector is updating while
    /// a test polls it) can pair new bytes with the old checksum, and the
    /// SDK reports a checksum mismatch. S3 itself replaces an object
    /// atomically. A body that stays wrong still fails.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut tries = 0;
        loop {
            let object = match self
                .s3
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(o) => o,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            match object.body.collect().await {
                Ok(body) => return Ok(Some(body.into_bytes().to_vec())),
                Err(e) if tries < 4 => {
                    tries += 1;
                    eprintln!("reading {key} again: {e:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {key}")),
            }
        }
    }

    /// Every key under `prefix`, across listing pages.
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = out.next_continuation_token().map(str::to_owned);
            if out.is_truncated() != Some(true) || token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Waits until every key has a status object, or fails with the fleet's logs.
    pub async fn wait_for_status(
        &self,
        keys: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut found = Vec::new();
            for key in keys {
                if let Some(bytes) = self.get(&format!("outputs/status/{key}.json")).await? {
                    found.push(serde_json::from_slice(&bytes)?);
                }
            }
            if found.len() == keys.len() {
                return Ok(found);
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .children
                    .iter()
                    .map(|(l, _)| format!("--- {l}\n{}", tail(&self.log(l))))
                    .collect();
                bail!(
                    "{} of {} videos finished in {timeout:?}\n{}",
                    found.len(),
                    keys.len(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// No secret reached a log line or a status object: not the store's
    /// secret key, not the broker password, not a presigned URL's signature.
    /// Every e2e test runs this in `cleanup`.
    pub async fn assert_no_secrets(&self) -> anyhow::Result<()> {
        let mut secrets = vec![
            "X-Amz-Signature".to_owned(),
            "X-Amz-Credential".to_owned(),
            env("AWS_SECRET_ACCESS_KEY")?,
        ];
        if let Some(password) = self
            .amqp_url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password)
            .filter(|p| !p.is_empty())
        {
            secrets.push(format!(":{password}@"));
        }
        let mut texts = Vec::new();
        for entry in std::fs::read_dir(&self.work)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                texts.push((path.display().to_string(), std::fs::read_to_string(&path)?));
            }
        }
        for key in self.keys("outputs/status/").await? {
            if let Some(bytes) = self.get(&key).await? {
                texts.push((key, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        for (name, text) in &texts {
            for (i, secret) in secrets.iter().enumerate() {
                // Which one by position only: the message must not leak it.
                anyhow::ensure!(
                    !text.contains(secret.as_str()),
                    "secret #{i} (signature, credential, S3 key, broker password) leaked into {name}"
                );
            }
        }
        Ok(())
    }

    /// Deletes the namespace's queues and exchanges and the bucket's objects.
    pub async fn cleanup(mut self, tasks: &[&str]) -> anyhow::Result<()> {
        for (_, child) in &mut self.children {
            child.kill().ok();
            child.wait().ok();
        }
        self.assert_no_secrets().await?;
        let connection = self.connect("e2e cleanup").await?;
        let channel = connection.create_channel().await?;
        fleet::Topology::new(&self.namespace)
            .delete(&channel, tasks)
            .await?;
        for key in self.keys("").await? {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await?;
        }
        self.s3.delete_bucket().bucket(&self.bucket).send().await?;
        std::fs::remove_dir_all(&self.work).ok();
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn tail(log: &str) -> &str {
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    &log[start..]
}

impl Fleet {
    /// Publishes raw bytes to the fleet's jobs exchange under `key`, as a
    /// misbehaving client would.
    pub async fn publish_raw(&self, key: &str, body: &[u8]) -> anyhow::Result<()> {
        let connection = self.connect("e2e raw publish").await?;
        let channel = connection.create_channel().await?;
        let exchange = fleet::Topology::new(&self.namespace).jobs_exchange();
        channel
            .basic_publish(
                exchange.as_str().into(),
                key.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default(),
            )
            .await?
            .await?;
        connection.close(200, "done".into()).await.ok();
        Ok(())
    }
}

/// A loopback address nothing listens on yet, below Linux's ephemeral
/// range (32768 and up): a port the kernel hands out (`bind(:0)`) can be
/// handed out again as the local end of any outgoing connection before the
/// process meant to listen on it binds it, which failed the compose test
/// once with "Address already in use".
pub fn free_addr() -> anyhow::Result<String> {
    // Each call starts elsewhere (a port just released is free again), and
    // each test process elsewhere too.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(call.wrapping_mul(101));
    (0..10_000u32)
        .map(|i| 20_000 + (start.wrapping_add(i) % 10_000) as u16)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .context("no free loopback port between 20000 and 29999")
        .and_then(|l| Ok(l.local_addr()?.to_string()))
}

/// The body of a plain HTTP/1.0 GET, failing unless the answer is 200.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP body from {addr}{path}"))?;
    anyhow::ensure!(head.contains(" 200 "), "{addr}{path}: {head}");
    Ok(body.to_owned())
}

/// Runs ffmpeg with `args`, failing with its stderr.
pub fn ffmpeg(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Frames ffprobe decodes from the first video stream.
pub fn ffprobe_frames(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Parses a little-endian float32 2-D `.npy`: (rows, cols, data).
pub fn read_npy_f32(bytes: &[u8]) -> anyhow::Result<(usize, usize, Vec<f32>)> {
    anyhow::ensure!(
        bytes.starts_with(b"\x93NUMPY\x01\x00"),
        "not an npy v1 file"
    );
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len])?;
    anyhow::ensure!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "unexpected header {header}"
    );
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .context("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(dims.len() == 2, "shape {shape} is not 2-D");
    let data: Vec<f32> = bytes[10 + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    anyhow::ensure!(
        data.len() == dims[0] * dims[1],
        "{} values for shape {shape}",
        data.len()
    );
    Ok((dims[0], dims[1], data))
}

/// The shape numpy itself reads from an `.npy` file, via the test venv's python.
pub fn numpy_shape(path: &Path) -> anyhow::Result<String> {
    let out = Command::new(env("FF_PYTHON")?)
        .args([
            "-c",
            "import sys, numpy; a = numpy.load(sys.argv[1]); print(a.dtype, a.shape)",
        ])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "numpy cannot load {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

impl Fleet {
    /// The frame indexes an embedding run wrote for `key`, checked against
    /// the `.npy` row count: what "every frame once" is asserted on.
    pub async fn embedded_frames(&self, key: &str) -> anyhow::Result<Vec<u64>> {
        let frames: serde_json::Value = serde_json::from_slice(
            &self
                .get(&format!("outputs/embeddings/{key}.frames.json"))
                .await?
                .with_context(|| format!("no frames.json for {key}"))?,
        )?;
        let index: Vec<u64> = frames
            .as_array()
            .context("frames.json is not an array")?
            .iter()
            .map(|f| f["index"].as_u64().context("frame without index"))
            .collect::<anyhow::Result<_>>()?;
        let npy = self
            .get(&format!("outputs/embeddings/{key}.npy"))
            .await?
            .with_context(|| format!("no .npy for {key}"))?;
        let rows = read_npy_f32(&npy)?.0;
        anyhow::ensure!(
            rows == index.len(),
            "{key}: {rows} embedding rows for {} indexed frames",
            index.len()
        );
        Ok(index)
    }

    /// Messages ready in one of this fleet's queues (`frames.<task>`, …).
    pub fn ready(&self, queue: &str) -> anyhow::Result<u64> {
        self.queue_stat(queue, "messages_ready")
    }

    /// Messages delivered to a consumer and not yet acked.
    pub fn unacked(&self, queue: &str) -> anyhow::Result<u64> {
        self.queue_stat(queue, "messages_unacknowledged")
    }

    fn queue_stat(&self, queue: &str, column: &str) -> anyhow::Result<u64> {
        let name = format!("{}.{queue}", self.namespace);
        let listing = rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name", column])?;
        listing
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(n, _)| *n == name)
            .with_context(|| format!("queue {name} is not declared"))?
            .1
            .trim()
            .parse()
            .with_context(|| format!("{column} is not a number"))
    }
}

/// Runs `rabbitmqctl` on the local node (the tests' broker), failing with
/// its output.
pub fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private s3s-fs (the binary `scripts/setup.sh` installs, `S3S_FS`) on a
/// fixed loopback port, for tests that stop and restart the store.
pub struct S3Server {
    data: PathBuf,
    addr: String,
    child: Option<Child>,
}

impl S3Server {
    pub fn start(data: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data)?;
        let mut server = Self {
            data: data.to_owned(),
            addr: free_addr()?,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the server as a crash would (SIGKILL).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it (again) on the same port and data, and waits until it
    /// accepts connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        let (host, port) = self.addr.rsplit_once(':').context("address without port")?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))?;
        self.child = Some(
            Command::new(env("S3S_FS")?)
                .args(["--host", host, "--port", port])
                .args(["--access-key", &env("AWS_ACCESS_KEY_ID")?])
                .args(["--secret-key", &env("AWS_SECRET_ACCESS_KEY")?])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.addr).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill().ok();
    }
}

impl Fleet {
    /// Peak resident memory (VmHWM) of a running process, in KiB.
    pub fn peak_rss_kib(&self, label: &str) -> anyhow::Result<u64> {
        let (_, child) = self
            .children
            .iter()
            .find(|(l, _)| l == label)
            .context("no such process")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc status")
    }
}

/// Starts the broker again whatever happened to a test that stops it, so
/// that a failure there cannot fail every test after it.
pub struct BrokerGuard;

impl BrokerGuard {
    fn ping() -> bool {
        Command::new("rabbitmq-diagnostics")
            .args(["-q", "ping"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// A full node start: the Erlang VM, then the app.
    pub fn start_node() -> anyhow::Result<()> {
        let started = Command::new("rabbitmq-server").arg("-detached").status()?;
        anyhow::ensure!(started.success(), "rabbitmq-server -detached failed");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !Self::ping() {
            anyhow::ensure!(Instant::now() < deadline, "RabbitMQ did not start in 120 s");
            std::thread::sleep(Duration::from_millis(500));
        }
        rabbitmqctl(&["await_startup"])?;
        Ok(())
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        if !Self::ping() {
            rabbitmqctl(&["start_app"]).ok();
        }
        if !Self::ping() {
            Self::start_node().ok();
        }
    }
}
