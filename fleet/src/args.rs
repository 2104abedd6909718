use clap::{Args, ValueEnum};

/// Where the broker is and which fleet on it this process belongs to.
#[derive(Clone, Debug, Args)]
pub struct BrokerArgs {
    /// AMQP URL of RabbitMQ. The default is the local-development guest account.
    #[arg(
        long,
        env = "FF_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue, so that fleets and tests sharing a
    /// broker never see each other's messages.
    #[arg(long, env = "FF_NAMESPACE", default_value = "ff")]
    pub namespace: String,

    /// PEM file of the CA that signed the broker's certificate, for an
    /// `amqps://` URL whose CA is not in the system's trust store.
    #[arg(long, env = "FF_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// Log line format. Filter with RUST_LOG (default `info`).
    #[arg(long, env = "FF_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}
