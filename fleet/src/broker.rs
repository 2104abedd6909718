use std::time::Duration;

use lapin::{Connection, ConnectionProperties, tcp::OwnedTLSConfig};
use thiserror::Error;

use crate::BrokerArgs;

#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ at {url}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("cannot read the broker's CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
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

/// How hard a connection tries to reach the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Long-running processes: wait out a broker that refuses
    /// connections for about ten minutes, trying again at most every 5 s,
    /// then fail (and let the supervisor restart us). Losing the
    /// connection later is `reconnecting`'s business.
    Service,
    /// One-shot commands: one try, so that a wrong URL, credential or
    /// certificate fails at once instead of after ten minutes of retries.
    OneShot,
}

/// Opens a connection. lapin's own recovery stays off (see
/// `reconnect.rs`): a lost connection fails everything on it at once. An
/// `amqps://` URL is verified against the system's CAs plus
/// `--amqp-ca-file`.
pub async fn connect(
    broker: &BrokerArgs,
    name: &str,
    persistence: Persistence,
) -> Result<Connection, BrokerError> {
    let url = broker.amqp_url.as_str();
    if guest_off_loopback(url) {
        tracing::warn!(
            url = redact_url(url),
            "logging in as guest to a non-loopback broker: guest is for local development only; set FF_AMQP_URL with a user of your own"
        );
    }
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .configure_backoff(|backoff| match persistence {
            Persistence::Service => backoff
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(120),
            Persistence::OneShot => backoff.with_max_times(0),
        });
    let mut tls = OwnedTLSConfig::default();
    if let Some(path) = &broker.amqp_ca_file {
        let pem = std::fs::read_to_string(path).map_err(|source| BrokerError::CaFile {
            path: path.display().to_string(),
            source,
        })?;
        tls.cert_chain = Some(pem);
    }
    let failed = |source| BrokerError::Connect {
        url: redact_url(url),
        source,
    };
    let runtime = lapin::runtime::default_runtime().map_err(failed)?;
    Connection::connect_with_config(url, props, tls, runtime)
        .await
        .map_err(failed)
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
