//! The `target-app` binary: parses the command line, calls into the library and maps
//! the outcome to an exit code (0 ok, 1 runtime failure, 78 invalid configuration).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use target_app::config::{self, Config, EXIT_CONFIG};
use target_app::logging::{self, LineWriter};

#[derive(Parser)]
#[command(
    name = "target-app",
    version,
    about = "A small shop service: API, worker and pricing upstream."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the shop API on LISTEN_ADDR and the admin API on ADMIN_LISTEN_ADDR.
    Serve {
        /// The .env file with the configuration.
        #[arg(long)]
        env_file: PathBuf,
    },
    /// Run the background job worker.
    Worker {
        /// The .env file with the configuration.
        #[arg(long)]
        env_file: PathBuf,
    },
    /// Run the pricing/FX upstream service. Its admin API is enabled by the
    /// UPSTREAM_ADMIN_TOKEN environment variable.
    Upstream {
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long)]
        listen: SocketAddr,
        /// Name reported as `source` in every answer (primary, fallback, ...).
        #[arg(long)]
        name: String,
    },
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise: a container healthcheck
    /// (images built from scratch have no curl).
    Probe {
        /// e.g. http://127.0.0.1:8000/readyz
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

/// Loads the configuration or reports it as `CONFIG_INVALID` and returns exit code 78.
fn load_config(path: &Path, log_file: &str) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        let log_dir = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| config::probe_log_dir(&text));
        config::report_invalid(&error, log_dir.map(|d| d.join(log_file)).as_deref());
        ExitCode::from(EXIT_CONFIG as u8)
    })
}

fn failed(error: &dyn std::error::Error) -> ExitCode {
    tracing::error!(message = "Fatal error.", code = "FATAL", error = %error);
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { url, timeout_ms } => probe(&url, timeout_ms).await,
        Command::Serve { env_file } => {
            let config = match load_config(&env_file, "target-app.log") {
                Ok(c) => c,
                Err(code) => return code,
            };
            match target_app::server::serve(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e),
            }
        }
        Command::Worker { env_file } => {
            let config = match load_config(&env_file, "worker.log") {
                Ok(c) => c,
                Err(code) => return code,
            };
            match target_app::worker::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e),
            }
        }
        Command::Upstream { listen, name } => {
            logging::init("info", LineWriter::stderr_only());
            let token = std::env::var("UPSTREAM_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let shutdown = async {
                target_app::server::shutdown_signal().await;
            };
            match target_app::upstream::server::serve(listen, &name, token, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => failed(&e),
            }
        }
    }
}

async fn probe(url: &str, timeout_ms: u64) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("probe: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("probe: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
