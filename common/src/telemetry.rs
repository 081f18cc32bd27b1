//! Logging: tracing with an env filter, as text or JSON.

use clap::ValueEnum;
use std::io::IsTerminal;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging flags every service takes (`#[command(flatten)]`).
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

impl LogArgs {
    /// [`init`] with these flags.
    pub fn init(&self) -> Result<(), String> {
        init(self.log_format, &self.log_filter)
    }
}

/// Installs the global subscriber, writing to stderr (stdout stays free for a program's output, such as
/// mizzen-train's report). `filter` uses `RUST_LOG` syntax, e.g. `info,kube=debug`. Text is coloured only on
/// a terminal: pod logs and pipes get plain lines.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            registry.with(fmt::layer().compact().with_ansi(ansi).with_writer(std::io::stderr)).try_init()
        }
        LogFormat::Json => {
            registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).try_init()
        }
    };
    result.map_err(|e| e.to_string())
}
