use lapin::{Connection, ConnectionProperties};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {url}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("RabbitMQ refused {what}")]
    Protocol {
        what: String,
        #[source]
        source: lapin::Error,
    },
}

impl BrokerError {
    pub(crate) fn protocol(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        let what = what.into();
        move |source| BrokerError::Protocol { what, source }
    }
}

/// Hides the password of an `amqp://user:pass@host` URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// Opens a connection that recovers by itself after a broker restart;
/// channels then replay their topology, QoS and consumers.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover();
    Connection::connect(url, props)
        .await
        .map_err(|source| BrokerError::Connect {
            url: redact_url(url),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("amqp://guest:secret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://rabbit:5672"), "amqp://rabbit:5672");
    }
}
