//! `ops watch` on a real run: plain lines through a pipe, a full-screen
//! view on a terminal that quits on q.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use e2e::{Fleet, OPENCV_DATA, env};

const TASK: &str = "embed.effnet-lite0";

fn ops() -> anyhow::Result<PathBuf> {
    Ok(PathBuf::from(env("FF_BIN_DIR")?).join("ops"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_follows_a_run_and_quits_cleanly() -> anyhow::Result<()> {
    let mut fleet = Fleet::new("opswatch").await?;
    let model = env("FF_TEST_MODEL_DIR")?;
    let capture = fleet.work.join("watch.out");
    // Through a pipe: plain lines, stopped by SIGTERM.
    let mut plain = Command::new(ops()?)
        .args(["watch", "--interval", "300ms"])
        .env("FF_NAMESPACE", &fleet.namespace)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&capture)?)
        .stderr(Stdio::inherit())
        .spawn()?;
    fleet.spawn("producer", "producer", &["run", "--job-frames", "8"])?;
    fleet.spawn("collector", "producer", &["collect"])?;
    fleet.spawn("worker", "worker", &["--task", TASK, "--model-dir", &model])?;
    fleet
        .upload(
            "in/vtest.avi",
            Path::new(OPENCV_DATA).join("vtest.avi").as_path(),
        )
        .await?;
    // The view must be up before the task is queued to see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&capture)?.contains("queue=videos") {
        anyhow::ensure!(Instant::now() < deadline, "ops watch printed nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let source = format!("s3://{}/in/", fleet.bucket);
    fleet.run(
        "producer",
        &["submit", &source, "--task", TASK, "--sample", "every=10"],
    )?;
    fleet
        .wait_for_status(&["in/vtest.avi"], Duration::from_secs(300))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(plain.id().to_string())
        .status()?;
    let started = Instant::now();
    let code = loop {
        if let Some(status) = plain.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "ops watch ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code}");
    let text = std::fs::read_to_string(&capture)?;
    assert!(!text.contains('\u{1b}'), "no terminal codes in a pipe");
    let video = format!("video=s3://{}/in/vtest.avi frames=", fleet.bucket);
    assert!(
        text.contains(&video),
        "the video was seen in flight:\n{text}"
    );
    assert!(text.contains("queue=frames.embed.effnet-lite0 "), "{text}");
    assert!(text.contains(" eta="), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("failed_last_hour=0")),
        "{text}"
    );

    // On a terminal (a pty from `script`): full screen, q quits.
    let command = format!("{} watch --interval 300ms", ops()?.display());
    let mut tty = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("FF_NAMESPACE", &fleet.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut stdin = tty.stdin.take().expect("piped");
    stdin.write_all(b"q")?;
    stdin.flush()?;
    let started = Instant::now();
    let code = loop {
        if let Some(status) = tty.try_wait()? {
            break status;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(10),
            "ops watch ignored q"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(stdin);
    let out = tty.wait_with_output()?;
    assert!(code.success(), "{code}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("QUEUE") && screen.contains("ETA"),
        "{screen}"
    );
    assert!(screen.contains("VIDEOS IN FLIGHT"), "{screen}");
    assert!(
        screen.contains('\u{1b}'),
        "a terminal gets a full-screen view"
    );
    fleet.cleanup(&[TASK]).await
}
