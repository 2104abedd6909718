//! `ops watch`: the fleet, live. Queue depths and rates come from the
//! management API every interval; videos in flight and failures come from
//! a private copy of the fleet's `videos` and `results` traffic (an
//! exclusive, length-capped queue bound beside the real ones), so the view
//! needs no bucket access and costs the fleet nothing but that copy. It
//! knows what happened while it watched, not before.

use std::{
    collections::{HashMap, VecDeque},
    io::{IsTerminal, Write},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use crossterm::{
    cursor, event,
    terminal::{self, ClearType},
};
use futures::StreamExt;
use lapin::{
    Consumer,
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use schema::Message;
use tokio::sync::mpsc;
use uuid::Uuid;

use fleet::Topology;

use crate::status::{Api, QueueStatus, format_eta};

/// Messages the private copy queue holds before dropping its oldest: a
/// stalled `ops watch` never grows the broker.
const COPY_MAX_LENGTH: i64 = 10_000;
/// Videos tracked at once; the oldest are forgotten beyond this.
const MAX_TRACKED: usize = 10_000;
/// Weight of the newest ack-rate sample in the smoothed rate.
const SMOOTHING: f64 = 0.3;
const HOUR: Duration = Duration::from_secs(3600);

struct Video {
    source: String,
    frames_done: u64,
    /// Known once the producer has decoded the whole video.
    frames_total: Option<u64>,
    seen: Instant,
}

/// What the copy of the traffic has shown so far.
#[derive(Default)]
struct Board {
    videos: HashMap<Uuid, Video>,
    /// When and what failed, newest last, at most an hour back.
    failures: VecDeque<(Instant, SystemTime, String)>,
    incomplete: usize,
    /// Smoothed ack rate per queue.
    ack_rate: HashMap<String, f64>,
}

impl Board {
    fn video(&mut self, id: Uuid, source: &schema::ObjectRef) -> &mut Video {
        if self.videos.len() >= MAX_TRACKED && !self.videos.contains_key(&id) {
            let oldest = self
                .videos
                .iter()
                .min_by_key(|(_, v)| v.seen)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.videos.remove(&oldest);
            }
        }
        self.videos.entry(id).or_insert_with(|| Video {
            source: source.to_string(),
            frames_done: 0,
            frames_total: None,
            seen: Instant::now(),
        })
    }

    fn record(&mut self, message: Message) {
        match message {
            Message::VideoTask(t) => {
                self.video(t.video_id, &t.source);
            }
            Message::FrameResult(r) => {
                self.video(r.video_id, &r.source).frames_done += r.frames.len() as u64;
            }
            Message::VideoDone(d) => {
                self.video(d.video_id, &d.source).frames_total = Some(d.frames);
                if d.coverage.incomplete.is_some() {
                    self.incomplete += 1;
                }
            }
            Message::VideoFailed(f) => {
                self.videos.remove(&f.video_id);
                self.failures
                    .push_back((Instant::now(), SystemTime::now(), f.reason));
            }
            Message::FrameJob(_) => {}
        }
        // A video is through the workers once every sampled frame has a result.
        self.videos
            .retain(|_, v| v.frames_total.is_none_or(|total| v.frames_done < total));
        while self
            .failures
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > HOUR)
        {
            self.failures.pop_front();
        }
    }

    fn smooth(&mut self, queues: &[QueueStatus]) {
        for q in queues {
            let rate = self.ack_rate.entry(q.queue.clone()).or_insert(q.ack_per_s);
            *rate = SMOOTHING * q.ack_per_s + (1.0 - SMOOTHING) * *rate;
        }
    }

    fn eta(&self, q: &QueueStatus) -> String {
        let rate = self.ack_rate.get(&q.queue).copied().unwrap_or(q.ack_per_s);
        format_eta(crate::status::eta_s(q.ready, rate))
    }
}

/// Binds the private copy queue and consumes it (auto-ack: a copy needs no
/// delivery guarantee).
async fn subscribe(
    broker: &fleet::BrokerArgs,
    topology: &Topology,
) -> anyhow::Result<(lapin::Connection, Consumer)> {
    let connection = fleet::connect(broker, "ops watch", fleet::Persistence::Service).await?;
    let channel = connection.create_channel().await?;
    // Like every process: the view may start before the rest of the fleet.
    topology.declare_core(&channel).await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(COPY_MAX_LENGTH),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            args,
        )
        .await
        .context("declaring the watch copy queue")?;
    for key in [Topology::VIDEOS_KEY, Topology::RESULTS_KEY] {
        channel
            .queue_bind(
                queue.name().clone(),
                topology.jobs_exchange().as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding the watch copy to {}", topology.jobs_exchange()))?;
    }
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "ops watch".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// Puts the terminal back however the view ends.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode()?;
        crossterm::execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(Self)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        crossterm::execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        )
        .ok();
        terminal::disable_raw_mode().ok();
    }
}

/// q, Esc or Ctrl-C on the terminal (raw mode swallows the signal).
fn spawn_key_reader(quit: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(200)) {
                Ok(true) => {}
                Ok(false) if quit.is_closed() => return,
                Ok(false) => continue,
                Err(_) => return,
            }
            if let Ok(event::Event::Key(key)) = event::read() {
                let ctrl_c = key.code == event::KeyCode::Char('c')
                    && key.modifiers.contains(event::KeyModifiers::CONTROL);
                if ctrl_c
                    || matches!(
                        key.code,
                        event::KeyCode::Char('q' | 'Q') | event::KeyCode::Esc
                    )
                {
                    quit.blocking_send(()).ok();
                    return;
                }
            }
        }
    });
}

fn short<'a>(queue: &'a str, namespace: &str) -> &'a str {
    queue
        .strip_prefix(namespace)
        .and_then(|q| q.strip_prefix('.'))
        .unwrap_or(queue)
}

fn clip(line: &str, width: usize) -> String {
    line.chars().take(width).collect()
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The full-screen view, one line per entry.
fn screen_lines(
    board: &Board,
    queues: &[QueueStatus],
    namespace: &str,
    rows: usize,
) -> Vec<String> {
    let mut lines = vec![
        format!(
            "framefleet {namespace}   {}   q quits",
            timestamp(SystemTime::now())
        ),
        String::new(),
    ];
    let width = queues
        .iter()
        .map(|q| short(&q.queue, namespace).len())
        .max()
        .unwrap_or(5)
        .max(5);
    lines.push(format!(
        "{:<width$}  {:>7}  {:>7}  {:>4}  {:>7}  {:>7}  {:>8}",
        "QUEUE", "READY", "UNACKED", "CONS", "IN/s", "ACK/s", "ETA"
    ));
    let mut dead = 0;
    for q in queues {
        if q.queue == format!("{namespace}.dead") {
            dead = q.ready + q.unacked;
        }
        lines.push(format!(
            "{:<width$}  {:>7}  {:>7}  {:>4}  {:>7.1}  {:>7.1}  {:>8}",
            short(&q.queue, namespace),
            q.ready,
            q.unacked,
            q.consumers,
            q.publish_per_s,
            q.ack_per_s,
            board.eta(q)
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "dead letters {dead}   failed (last hour) {}   incomplete {}",
        board.failures.len(),
        board.incomplete
    ));
    lines.push(String::new());
    lines.push(format!("VIDEOS IN FLIGHT ({})", board.videos.len()));
    let mut videos: Vec<&Video> = board.videos.values().collect();
    videos.sort_by_key(|v| v.seen);
    let room = rows.saturating_sub(lines.len() + 4).max(3);
    for v in videos.iter().take(room) {
        let total = v.frames_total.map_or("?".into(), |t| t.to_string());
        let frames = format!("{} / {total}", v.frames_done);
        lines.push(format!("  {frames:>15}  {}", v.source));
    }
    if videos.len() > room {
        lines.push(format!("  … and {} more", videos.len() - room));
    }
    if let Some((_, at, reason)) = board.failures.back() {
        lines.push(String::new());
        lines.push(format!("LAST FAILURE {}", timestamp(*at)));
        lines.push(format!("  {reason}"));
    }
    lines
}

/// The same facts as plain log-style lines, for pipes and files.
fn plain_lines(board: &Board, queues: &[QueueStatus], namespace: &str) -> Vec<String> {
    let now = timestamp(SystemTime::now());
    let mut lines: Vec<String> = queues
        .iter()
        .map(|q| {
            format!(
                "{now} queue={} ready={} unacked={} consumers={} in/s={:.1} ack/s={:.1} eta={}",
                short(&q.queue, namespace),
                q.ready,
                q.unacked,
                q.consumers,
                q.publish_per_s,
                q.ack_per_s,
                board.eta(q)
            )
        })
        .collect();
    for v in board.videos.values() {
        let total = v.frames_total.map_or("?".into(), |t| t.to_string());
        lines.push(format!(
            "{now} video={} frames={}/{total}",
            v.source, v.frames_done
        ));
    }
    lines.push(format!(
        "{now} failed_last_hour={} incomplete={}",
        board.failures.len(),
        board.incomplete
    ));
    lines
}

pub async fn run(
    api: &Api,
    broker: &fleet::BrokerArgs,
    namespace: &str,
    interval: Duration,
) -> anyhow::Result<()> {
    let topology = Topology::new(namespace);
    let (connection, mut copy) = subscribe(broker, &topology).await?;
    let tty = std::io::stdout().is_terminal();
    let (quit_tx, mut quit) = mpsc::channel(1);
    let _screen = if tty {
        let screen = Screen::enter()?;
        spawn_key_reader(quit_tx);
        Some(screen)
    } else {
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            } else {
                tokio::signal::ctrl_c().await.ok();
            }
            quit_tx.send(()).await.ok();
        });
        None
    };
    let mut board = Board::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = quit.recv() => break,
            delivery = copy.next() => match delivery {
                Some(Ok(d)) => {
                    if let Ok(message) = schema::decode(&d.data) {
                        board.record(message);
                    }
                }
                Some(Err(e)) => anyhow::bail!("lost the copy of the fleet's traffic: {e}"),
                None => anyhow::bail!("the broker closed the watch copy queue"),
            },
            _ = ticker.tick() => {
                let queues = api.queues(namespace).await?;
                board.smooth(&queues);
                let mut out = std::io::stdout().lock();
                if tty {
                    // A pty nobody sized (script, some CI) reports 0×0.
                    let (cols, rows) = terminal::size()
                        .ok()
                        .filter(|&(c, r)| c > 0 && r > 0)
                        .unwrap_or((80, 24));
                    crossterm::queue!(out, cursor::MoveTo(0, 0), terminal::Clear(ClearType::All))?;
                    for line in screen_lines(&board, &queues, namespace, rows as usize) {
                        write!(out, "{}\r\n", clip(&line, cols as usize))?;
                    }
                } else {
                    for line in plain_lines(&board, &queues, namespace) {
                        writeln!(out, "{line}")?;
                    }
                }
                out.flush()?;
            }
        }
    }
    connection.close(200, "done".into()).await.ok();
    Ok(())
}
