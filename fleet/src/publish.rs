use std::time::Duration;

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, PublisherConfirm,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use thiserror::Error;

use crate::BrokerError;

#[derive(Debug, Error)]
pub enum PublishError {
    /// No queue is bound for the key: the message would have vanished.
    #[error("no queue is bound to {exchange} for routing key {key}")]
    Unroutable { exchange: String, key: String },
    /// The broker refused the message, typically a full bounded queue.
    #[error("RabbitMQ nacked the message for routing key {key}")]
    Nacked { key: String },
    #[error("publishing to {key} failed")]
    Broker {
        key: String,
        #[source]
        source: lapin::Error,
    },
}

/// A published message whose confirm has not arrived yet.
#[must_use = "a publish is only safe once its confirm is awaited"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    exchange: String,
    key: String,
}

impl PendingConfirm {
    pub async fn wait(self) -> Result<(), PublishError> {
        let key = self.key;
        match self.confirm.await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            // A mandatory message that found no queue still gets an ack; the
            // returned message is the only sign it was dropped.
            Ok(Confirmation::Ack(Some(_))) | Ok(Confirmation::NotRequested) => {
                Err(PublishError::Unroutable {
                    exchange: self.exchange,
                    key,
                })
            }
            Ok(Confirmation::Nack(_)) => Err(PublishError::Nacked { key }),
            Err(source) => Err(PublishError::Broker { key, source }),
        }
    }
}

/// A channel in confirm mode bound to one exchange. Cheap to clone; clones
/// share the channel, so concurrent publishes pipeline their confirms.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    exchange: String,
}

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Publisher {
    pub async fn open(connection: &Connection, exchange: &str) -> Result<Self, BrokerError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(BrokerError::protocol("opening a publishing channel"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(BrokerError::protocol("enabling publisher confirms"))?;
        // Exposed from the start, so that a rate over it reads 0, not nothing.
        metrics::counter!(crate::metrics::PUBLISH_NACKS).increment(0);
        Ok(Self {
            channel,
            exchange: exchange.to_owned(),
        })
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Sends one persistent, mandatory message; the confirm is awaited
    /// separately so that several can be in flight.
    pub async fn send(
        &self,
        key: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<PendingConfirm, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/x-framefleet".into())
            .with_headers(headers);
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.into(),
                options,
                payload,
                properties,
            )
            .await
            .map_err(|source| PublishError::Broker {
                key: key.to_owned(),
                source,
            })?;
        Ok(PendingConfirm {
            confirm,
            exchange: self.exchange.clone(),
            key: key.to_owned(),
        })
    }

    /// Publishes until confirmed. A nack (a full queue pushing back) waits
    /// with exponential backoff and tries again for as long as it takes.
    /// An unroutable key or a broker error (a lost connection among them:
    /// the caller's run unwinds and `reconnecting` starts it again) is
    /// returned.
    pub async fn publish(
        &self,
        key: &str,
        payload: &[u8],
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let mut backoff = BACKOFF_START;
        loop {
            let outcome = match self.send(key, payload, headers.clone()).await {
                Ok(pending) => pending.wait().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(PublishError::Nacked { .. }) => {
                    metrics::counter!(crate::metrics::PUBLISH_NACKS).increment(1);
                    tracing::debug!(
                        key,
                        backoff_ms = backoff.as_millis() as u64,
                        "publish nacked, backing off"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e @ (PublishError::Broker { .. } | PublishError::Unroutable { .. })) => {
                    return Err(e);
                }
            }
        }
    }
}
