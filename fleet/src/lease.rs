//! One active holder per name across the fleet, using the broker itself.
//!
//! An exclusive queue can be declared by one connection only; any other
//! connection's declare fails with RESOURCE_LOCKED, and RabbitMQ deletes
//! the queue when its connection goes away (crash, kill, network loss).
//! That is exactly a lease with liveness: no extra service, no clock, and a
//! dead holder releases it within the broker's heartbeat timeout.

use lapin::{
    Channel, Connection, ErrorKind,
    options::QueueDeclareOptions,
    types::{FieldTable, ShortString},
};

use crate::BrokerError;

/// AMQP's RESOURCE_LOCKED: the exclusive queue belongs to another connection.
const RESOURCE_LOCKED: u16 = 405;

pub struct Lease {
    channel: Channel,
    queue: String,
}

impl Lease {
    /// Takes the lease named `queue` if nobody holds it: `Ok(None)` when
    /// another connection does.
    pub async fn try_acquire(
        connection: &Connection,
        queue: &str,
    ) -> Result<Option<Self>, BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::protocol("opening a lease channel"))?;
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        match Self::declare(&channel, queue, options).await {
            Ok(()) => Ok(Some(Self {
                channel,
                queue: queue.to_owned(),
            })),
            Err(e) if is_locked(&e) => Ok(None),
            Err(e) => Err(BrokerError::protocol(format!("taking the lease {queue}"))(
                e,
            )),
        }
    }

    /// Whether this connection still holds the lease: a passive declare of
    /// an exclusive queue succeeds only for its owner. False after the
    /// connection dropped and someone else took it meanwhile.
    pub async fn still_held(&self) -> bool {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel.status().connected()
            && Self::declare(&self.channel, &self.queue, passive)
                .await
                .is_ok()
    }

    async fn declare(
        channel: &Channel,
        queue: &str,
        options: QueueDeclareOptions,
    ) -> lapin::Result<()> {
        channel
            .queue_declare(ShortString::from(queue), options, FieldTable::default())
            .await
            .map(drop)
    }

    /// Gives the lease up at once instead of at connection close.
    pub async fn release(self) {
        self.channel
            .queue_delete(ShortString::from(self.queue.as_str()), Default::default())
            .await
            .ok();
        self.channel.close(200, "lease released".into()).await.ok();
    }
}

fn is_locked(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == RESOURCE_LOCKED)
}
