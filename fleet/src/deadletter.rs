use lapin::{message::Delivery, types::AMQPValue};

use crate::{PublishError, Publisher};

/// Header that carries why a message was dead-lettered by Framefleet itself.
pub const REASON_HEADER: &str = "x-ff-reason";

/// Moves a message that can never succeed (malformed, wrong version) to the
/// dead-letter exchange with the reason in a header, then acks the original.
/// A plain reject would dead-letter it too, but without saying why. `cause`
/// is a short, fixed name for the kind of reason (a metrics label).
pub async fn dead_letter(
    dead: &Publisher,
    delivery: &Delivery,
    queue: &str,
    cause: &'static str,
    reason: &str,
) -> Result<(), PublishError> {
    tracing::warn!(
        failure = "dead_letter",
        cause,
        queue,
        tag = delivery.delivery_tag,
        reason,
        "message dead-lettered"
    );
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert("x-ff-queue".into(), AMQPValue::LongString(queue.into()));
    dead.publish(delivery.routing_key.as_str(), &delivery.data, headers)
        .await?;
    crate::settle::ack(&delivery.acker).await;
    Ok(())
}
