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

/// Whether `url` logs in as RabbitMQ's `guest` to a host that is not this
/// machine. RabbitMQ refuses that by default, and where it does not, the
/// well-known password is a hole: `guest` is for loopback development only.
fn guest_off_loopback(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let Some((userinfo, hostport)) = rest.split('/').next().and_then(|a| a.rsplit_once('@')) else {
        // No credentials in the URL: lapin logs in as guest.
        return !is_loopback(rest.split('/').next().unwrap_or_default());
    };
    userinfo.split(':').next() == Some("guest") && !is_loopback(hostport)
}

fn is_loopback(hostport: &str) -> bool {
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => hostport.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Opens a connection that recovers by itself after a broker restart;
/// channels then replay their topology, QoS and consumers.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    if guest_off_loopback(url) {
        tracing::warn!(
            url = redact_url(url),
            "logging in as guest to a non-loopback broker: guest is for local development only; set FF_AMQP_URL with a user of your own"
        );
    }
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
    use super::{guest_off_loopback, redact_url};

    #[test]
    fn guest_is_for_loopback_only() {
        for local in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://guest:guest@localhost:5672",
            "amqp://guest:guest@[::1]:5672/%2f",
            "amqp://framefleet:secret@rabbit.example.net:5672/%2f",
            "amqp://127.0.0.1:5672",
        ] {
            assert!(!guest_off_loopback(local), "{local}");
        }
        for remote in [
            "amqp://guest:guest@rabbitmq:5672/%2f",
            "amqps://guest:guest@10.0.0.7:5671",
            "amqp://rabbit.example.net:5672",
        ] {
            assert!(guest_off_loopback(remote), "{remote}");
        }
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("amqp://guest:secret@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://rabbit:5672"), "amqp://rabbit:5672");
    }
}
