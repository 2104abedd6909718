//! Acknowledging deliveries when the connection may be gone.
//!
//! A broker restart or network fault can drop the channel between storing
//! a message's outcome and acking it. That is not an error: the broker
//! redelivers every unacked message, and each consumer's outcome is
//! idempotent (same parts, same statuses, same results). So a lost ack is
//! logged and the consumer carries on instead of exiting. lapin refuses
//! (and reports as not done) an ack on a channel that was closed, so a
//! delivery tag of a dead channel can never ack another message.

use lapin::{
    Acker,
    options::{BasicAckOptions, BasicNackOptions},
};

/// Acks; returns whether the broker took the ack.
pub async fn ack(acker: &Acker) -> bool {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::warn!(
                "ack not sent: the channel closed since delivery; the broker redelivers"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "ack lost with the connection; the broker redelivers");
            false
        }
    }
}

/// Returns the delivery to its queue for another try (counted against the
/// queue's delivery limit). If the channel is gone, the broker requeues it
/// anyway.
pub async fn requeue(acker: &Acker) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if let Err(e) = acker.nack(requeue).await {
        tracing::warn!(error = %e, "requeue lost with the connection; the broker redelivers");
    }
}
