//! The `vodhook` binary: command-line parsing and wiring; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use vodhook::config::{Config, LogFormat, Overrides};
use vodhook::ingest::Ingest;
use vodhook::send::{self, TemplateOptions};

/// Receive Tencent Cloud VOD event notifications and never lose one.
#[derive(Debug, Parser)]
#[command(name = "vodhook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: receive VOD callbacks and log one line per event.
    Serve(ServeArgs),
    /// Post a realistic sample event (or a file) to a receiver.
    Send(SendArgs),
    /// Validate the configuration and print the effective values.
    CheckConfig(ConfigArgs),
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file (see config.example.toml); defaults apply without it.
    #[arg(long, short = 'c', value_name = "PATH", env = "VODHOOK_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Path that receives callbacks [default: /].
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Log format on stdout [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Largest accepted body in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Event type to generate, e.g. NewFileUpload, ProcedureStateChanged, FileDeleted, PullComplete.
    #[arg(
        value_name = "EVENT_TYPE",
        required_unless_present = "file",
        conflicts_with = "file"
    )]
    event_type: Option<String>,
    /// Receiver URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080/")]
    to: String,
    /// File id to put in the generated event (a fresh one by default).
    #[arg(long, value_name = "ID")]
    file_id: Option<String>,
    /// Generate the legacy v2017 format instead of v3.
    #[arg(long)]
    legacy: bool,
    /// Post this file's bytes as they are instead of a generated event.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Print the body that is sent.
    #[arg(long, short)]
    verbose: bool,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vodhook: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Send(args) => runtime.block_on(send(args)),
        Command::CheckConfig(args) => check_config(args),
    }
}

/// Exit status for a configuration or usage problem.
const USAGE: u8 = 2;

async fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        path: args.path,
        log_format: args.log_format,
        max_body_bytes: args.max_body_bytes,
    };
    let config = match Config::load(args.config.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vodhook: {error}");
            return ExitCode::from(USAGE);
        }
    };
    if let Err(error) = vodhook::log::init(config.log.format) {
        eprintln!("vodhook: {error:#}");
        return ExitCode::from(USAGE);
    }
    let listener = match TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(address = %config.server.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match vodhook::run(
        config,
        listener,
        Ingest::default(),
        vodhook::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn send(args: SendArgs) -> ExitCode {
    let body = match (&args.file, &args.event_type) {
        (Some(path), _) => match std::fs::read(path) {
            Ok(body) => body,
            Err(error) => {
                eprintln!("vodhook: cannot read {}: {error}", path.display());
                return ExitCode::from(USAGE);
            }
        },
        (None, Some(event_type)) => {
            let options = TemplateOptions {
                file_id: args.file_id.clone(),
                legacy: args.legacy,
            };
            match send::template(event_type, &options) {
                Ok(body) => serde_json::to_vec_pretty(&body).unwrap_or_default(),
                Err(error) => {
                    eprintln!("vodhook: {error}");
                    return ExitCode::from(USAGE);
                }
            }
        }
        (None, None) => {
            eprintln!("vodhook: give an event type or --file");
            return ExitCode::from(USAGE);
        }
    };
    if args.verbose {
        println!("{}", String::from_utf8_lossy(&body));
    }
    match send::post(&args.to, body, Duration::from_secs(args.timeout)).await {
        Ok(answer) => {
            println!("{} {}", answer.status, answer.body.trim_end());
            if (200..300).contains(&answer.status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("vodhook: the receiver answered {}", answer.status);
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(args: ConfigArgs) -> ExitCode {
    match Config::load(args.config.as_deref(), Overrides::default()) {
        Ok(config) => {
            match &args.config {
                Some(path) => println!("# {}: valid", path.display()),
                None => println!("# no --config given: defaults"),
            }
            print!("{}", config.to_toml_redacted());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vodhook: {error}");
            ExitCode::from(USAGE)
        }
    }
}
