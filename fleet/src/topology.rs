use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use crate::BrokerError;

/// Deliveries of one message before RabbitMQ dead-letters it instead of
/// requeueing it again: a poison job cannot loop forever.
const DELIVERY_LIMIT: i64 = 5;
/// Frame jobs a frames queue holds before publishers are refused and slow
/// down. At ≤ 8 MiB a job this bounds the broker's memory per task.
const FRAMES_MAX_LENGTH: i64 = 256;

/// Names and declarations of every exchange and queue of one fleet. All are
/// declared idempotently by whichever process starts first.
#[derive(Clone, Debug)]
pub struct Topology {
    ns: String,
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Direct exchange that routes every message by its routing key.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.ns)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.ns)
    }

    pub fn videos_queue(&self) -> String {
        format!("{}.videos", self.ns)
    }

    pub fn results_queue(&self) -> String {
        format!("{}.results", self.ns)
    }

    pub fn frames_queue(&self, task: &str) -> String {
        format!("{}.frames.{task}", self.ns)
    }

    /// The lease one watcher of a (source, pipeline) pair holds while active.
    pub fn watch_lease(&self, instance: &str) -> String {
        format!("{}.watch.{instance}.lease", self.ns)
    }

    /// Where that watcher's S3 event notifications wait.
    pub fn events_queue(&self, instance: &str) -> String {
        format!("{}.watch.{instance}.events", self.ns)
    }

    pub const VIDEOS_KEY: &'static str = "videos";
    pub const RESULTS_KEY: &'static str = "results";

    /// Routing key of a task's frame jobs: the task name itself.
    pub fn frames_key(task: &str) -> &str {
        task
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_exchange().into()),
        );
        args
    }

    /// Exchanges, the dead-letter queue, and the videos and results queues.
    pub async fn declare_core(&self, channel: &Channel) -> Result<(), BrokerError> {
        self.exchange(channel, &self.jobs_exchange(), ExchangeKind::Direct)
            .await?;
        self.exchange(channel, &self.dead_exchange(), ExchangeKind::Fanout)
            .await?;
        let mut dead_args = FieldTable::default();
        dead_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.queue(
            channel,
            &self.dead_queue(),
            dead_args,
            &self.dead_exchange(),
            "",
        )
        .await?;
        let videos = self.videos_queue();
        self.queue(
            channel,
            &videos,
            self.quorum_args(),
            &self.jobs_exchange(),
            Self::VIDEOS_KEY,
        )
        .await?;
        let results = self.results_queue();
        self.queue(
            channel,
            &results,
            self.quorum_args(),
            &self.jobs_exchange(),
            Self::RESULTS_KEY,
        )
        .await
    }

    /// A task's frames queue, bounded so that producers feel back-pressure
    /// (publishes are nacked) instead of filling the broker.
    pub async fn declare_frames(&self, channel: &Channel, task: &str) -> Result<(), BrokerError> {
        let mut args = self.quorum_args();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(FRAMES_MAX_LENGTH),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        self.queue(
            channel,
            &self.frames_queue(task),
            args,
            &self.jobs_exchange(),
            Self::frames_key(task),
        )
        .await
    }

    /// A watcher's queue of S3 event notifications, bound to the exchange
    /// the store publishes to (declared here too, so that the order in which
    /// store and fleet start does not matter). Quorum and dead-lettering as
    /// every other queue: a notification nobody can read is kept, not lost.
    pub async fn declare_events(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        kind: ExchangeKind,
        key: &str,
    ) -> Result<(), BrokerError> {
        self.exchange(channel, exchange, kind).await?;
        self.queue(channel, queue, self.quorum_args(), exchange, key)
            .await
    }

    /// Removes the given task queues and the core topology, so that a test
    /// leaves nothing behind on a shared broker.
    pub async fn delete(&self, channel: &Channel, tasks: &[&str]) -> Result<(), BrokerError> {
        let mut queues = vec![self.videos_queue(), self.results_queue(), self.dead_queue()];
        queues.extend(tasks.iter().map(|t| self.frames_queue(t)));
        for queue in queues {
            channel
                .queue_delete(
                    ShortString::from(queue.as_str()),
                    QueueDeleteOptions::default(),
                )
                .await
                .map_err(BrokerError::protocol(format!("deleting queue {queue}")))?;
        }
        for exchange in [self.jobs_exchange(), self.dead_exchange()] {
            channel
                .exchange_delete(ShortString::from(exchange.as_str()), Default::default())
                .await
                .map_err(BrokerError::protocol(format!(
                    "deleting exchange {exchange}"
                )))?;
        }
        Ok(())
    }

    async fn exchange(
        &self,
        channel: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), BrokerError> {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(name.into(), kind, options, FieldTable::default())
            .await
            .map_err(BrokerError::protocol(format!("declaring exchange {name}")))
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
        exchange: &str,
        key: &str,
    ) -> Result<(), BrokerError> {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(name.into(), options, args)
            .await
            .map_err(BrokerError::protocol(format!("declaring queue {name}")))?;
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::protocol(format!(
                "binding queue {name} to {exchange}"
            )))
    }
}
