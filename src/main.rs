//! The `vodhook` binary: command-line parsing and wiring; the work is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio::net::TcpListener;

use vodhook::actions::Actions;
use vodhook::clock::now_ms;
use vodhook::config::{Config, LogFormat, Overrides};
use vodhook::ingest::Ingest;
use vodhook::inspect::{self, Shown};
use vodhook::metrics::Metrics;
use vodhook::send::{self, TemplateOptions};
use vodhook::store::{self, DeliveryStatus, EventFilter, Reader, Store};
use vodhook::vod::{EventConfigChange, VodClient};
use vodhook::Listeners;

/// Receive Tencent Cloud VOD event notifications and never lose one.
#[derive(Debug, Parser)]
#[command(
    name = "vodhook",
    version = version_text(),
    about,
    propagate_version = true,
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log only warnings and errors (overrides RUST_LOG).
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more: -v debug, -vv trace (overrides RUST_LOG); `send -v` also prints the body sent.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The exit statuses, as `--help` and the README state them.
const EXIT_STATUS: &str = "Exit status:
  0  success (also `serve` and `pull` stopped by SIGINT or SIGTERM)
  1  failure: nothing found, the receiver refused or could not be reached, a runtime error
  2  usage or configuration error: a bad flag or value, an invalid configuration";

/// `--version`: the version, the commit and date of the build (from
/// `build.rs`; "unknown" outside a git checkout) and the SQLite library.
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {}, built {}, SQLite {})",
            env!("CARGO_PKG_VERSION"),
            env!("VODHOOK_COMMIT"),
            env!("VODHOOK_BUILD_DATE"),
            rusqlite::version()
        )
    })
}

/// `--limit`: a whole number of rows, at least 1.
fn limit(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("--limit 0 would show nothing: give at least 1".to_owned()),
        Ok(limit) => Ok(limit),
        Err(_) => Err("expected a whole number of rows, at least 1".to_owned()),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: receive VOD callbacks, store each durably, log one line per event.
    Serve(ServeArgs),
    /// Post a realistic sample event (or a file) to a receiver.
    Send(SendArgs),
    /// Validate the configuration and print the effective values.
    CheckConfig(CheckConfigArgs),
    /// Query stored events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// What happened to a media file: upload, tasks, outputs, deletion.
    File(LookupArgs),
    /// One task and its sub-tasks.
    Task(LookupArgs),
    /// Rebuild the task and file state from the stored raw events.
    Reindex(ReindexArgs),
    /// Consume the VOD reliable-callback queue (PullEvents → store → ConfirmEvents).
    Pull(PullArgs),
    /// Read or change the VOD event configuration through the API.
    #[command(subcommand)]
    Vod(VodCommand),
    /// The outbox: what the configured actions did with each event.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Run actions again for stored events, or re-POST them to another receiver.
    Replay(ReplayArgs),
    /// Print a shell completion script on stdout (e.g. `vodhook completions bash > /etc/bash_completion.d/vodhook`).
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout (e.g. `vodhook man > vodhook.1`).
    Man,
    /// Check the setup: configuration, store, listeners, callback path, VOD's event configuration.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
struct DoctorArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The address VOD reaches this host at, when it is on no interface
    /// (NAT); on a CVM it is read from the metadata service.
    #[arg(long, value_name = "IP", env = "VODHOOK_PUBLIC_IP")]
    public_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
enum DeliveriesCommand {
    /// One line per delivery, newest first.
    List(DeliveriesListArgs),
    /// One delivery with every attempt: exit codes or HTTP statuses, captured output.
    Show(DeliveryShowArgs),
}

#[derive(Debug, Args)]
struct DeliveriesListArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only deliveries in this state.
    #[arg(long, value_parser = ["pending", "retrying", "dead", "ok"])]
    status: Option<String>,
    /// Only this action's deliveries.
    #[arg(long, value_name = "NAME")]
    action: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = limit)]
    limit: u32,
}

#[derive(Debug, Args)]
struct DeliveryShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Delivery id.
    id: i64,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Event ids to replay.
    #[arg(value_name = "EVENT_ID")]
    ids: Vec<i64>,
    /// Every event received since an RFC 3339 time, a date (midnight UTC) or a duration ago (15m, 2h, 7d).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only this action (run even where its filters do not match).
    #[arg(long, value_name = "NAME", conflicts_with = "to")]
    action: Option<String>,
    /// Instead of running actions, POST the stored raw events to this URL.
    #[arg(long, value_name = "URL")]
    to: Option<String>,
}

#[derive(Debug, Args)]
struct PullArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file [default: ./vodhook.db].
    #[arg(long, value_name = "PATH", env = "VODHOOK_DB")]
    db: Option<PathBuf>,
    /// Log format on stdout [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Address of the metrics listener; "" turns it off [default: admin.pull_listen, 127.0.0.1:9102].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum VodCommand {
    /// The event configuration (DescribeEventConfig / ModifyEventConfig).
    #[command(subcommand)]
    Config(VodConfigCommand),
    /// How many events wait in the reliable-callback queue (DescribeEventsState).
    Queue(VodArgs),
}

#[derive(Debug, Subcommand)]
enum VodConfigCommand {
    /// Print the mode, callback URL and event switches.
    Show(VodArgs),
    /// Change them; what is not given stays as it is.
    Set(VodSetArgs),
}

#[derive(Debug, Args)]
struct VodArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct VodSetArgs {
    #[command(flatten)]
    common: VodArgs,
    /// push (normal callback) or pull (reliable callback).
    #[arg(long, value_parser = ["push", "pull"])]
    mode: Option<String>,
    /// The v3 callback URL ("" clears it).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// NewFileUpload events.
    #[arg(long, value_parser = ["on", "off"])]
    upload: Option<String>,
    /// FileDeleted events.
    #[arg(long, value_parser = ["on", "off"])]
    delete: Option<String>,
    /// PersistenceComplete events.
    #[arg(long, value_parser = ["on", "off"])]
    persistence: Option<String>,
    /// The callback SignKey (letters and digits, at most 32).
    #[arg(long, value_name = "KEY")]
    sign_key: Option<String>,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// One line per event, newest first.
    List(ListArgs),
    /// One event: its typed view, or with --raw the exact bytes received.
    Show(ShowArgs),
    /// Bodies refused with 400 (the last 1000 are kept).
    Rejected(RejectedArgs),
}

#[derive(Debug, Args)]
struct StoreArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file [default: store.path, ./vodhook.db].
    #[arg(long, value_name = "PATH", env = "VODHOOK_DB")]
    db: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only this event type.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only events about this file.
    #[arg(long, value_name = "ID")]
    file_id: Option<String>,
    /// Only events about this task.
    #[arg(long, value_name = "ID")]
    task_id: Option<String>,
    /// Only events received since an RFC 3339 time, a date (midnight UTC) or a duration ago (15m, 2h, 7d).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = limit)]
    limit: u32,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Event id (the `id=` of its log line, or from `events list`).
    id: i64,
    /// Print the exact bytes received instead.
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

#[derive(Debug, Args)]
struct RejectedArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = limit)]
    limit: u32,
}

#[derive(Debug, Args)]
struct LookupArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The id to look up.
    id: String,
}

#[derive(Debug, Args)]
struct ReindexArgs {
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// TOML configuration file (see config.example.toml); defaults apply without it.
    #[arg(long, short = 'c', value_name = "PATH", env = "VODHOOK_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file, as `serve --db` [default: store.path].
    #[arg(long, value_name = "PATH", env = "VODHOOK_DB")]
    db: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file [default: ./vodhook.db].
    #[arg(long, value_name = "PATH", env = "VODHOOK_DB")]
    db: Option<PathBuf>,
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
    /// Address of the metrics listener; "" turns it off [default: 127.0.0.1:9101].
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Event type to generate, e.g. NewFileUpload, ProcedureStateChanged, FileDeleted, PullComplete.
    #[arg(
        value_name = "EVENT_TYPE",
        required_unless_present_any = ["file", "story"],
        conflicts_with_all = ["file", "story"]
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
    /// Post an upload and then its task flow (NewFileUpload, then
    /// ProcedureStateChanged with the same FileId and task id), so that
    /// `vodhook file <id>` shows the whole journey.
    #[arg(long, conflicts_with_all = ["file", "legacy"])]
    story: bool,
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
    let log_spec = vodhook::log::verbosity_spec(cli.quiet, cli.verbose);
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, log_spec)),
        Command::Send(args) if args.story => runtime.block_on(send_story(args)),
        Command::Send(args) => runtime.block_on(send(args, cli.verbose > 0)),
        Command::CheckConfig(args) => check_config(args),
        Command::Events(EventsCommand::List(args)) => {
            runtime.block_on(query(&args.store, async |reader, json| {
                let since_ms = match args
                    .since
                    .as_deref()
                    .map(|s| inspect::parse_since(s, now_ms()))
                {
                    Some(Err(error)) => return Err(Failure::Usage(error)),
                    Some(Ok(ms)) => Some(ms),
                    None => None,
                };
                let event_type = match args.event_type.as_deref() {
                    None => None,
                    Some(name) => Some(event_type_filter(reader, name).await?),
                };
                let filter = EventFilter {
                    event_type,
                    file_id: args.file_id.clone(),
                    task_id: args.task_id.clone(),
                    since_ms,
                    limit: args.limit,
                };
                write_out(
                    inspect::events_list(reader, &filter, json)
                        .await?
                        .as_bytes(),
                );
                let total = reader.count_events(&filter).await?;
                if total > u64::from(filter.limit) {
                    // On stderr: stdout stays the rows, for scripts.
                    eprintln!(
                    "vodhook: showing {} of {total} events (newest first); use --limit N for more",
                    filter.limit
                );
                }
                Ok(String::new())
            }))
        }
        Command::Events(EventsCommand::Show(args)) => runtime.block_on(query(
            &args.store,
            async |reader, json| match inspect::event_show(reader, args.id, args.raw, json).await? {
                Some(Shown::Text(text)) => Ok(text),
                Some(Shown::Raw(bytes)) => {
                    write_out(&bytes);
                    Ok(String::new())
                }
                None => Err(Failure::NotFound(format!("no event {}", args.id))),
            },
        )),
        Command::Events(EventsCommand::Rejected(args)) => runtime
            .block_on(query(&args.store, async |reader, json| {
                Ok(inspect::rejected_list(reader, args.limit, json).await?)
            })),
        Command::File(args) => runtime.block_on(query(&args.store, async |reader, json| {
            inspect::file_view(reader, &args.id, json)
                .await?
                .ok_or_else(|| Failure::NotFound(format!("nothing known about file {}", args.id)))
        })),
        Command::Task(args) => runtime.block_on(query(&args.store, async |reader, json| {
            inspect::task_view(reader, &args.id, json)
                .await?
                .ok_or_else(|| Failure::NotFound(format!("nothing known about task {}", args.id)))
        })),
        Command::Reindex(args) => runtime.block_on(reindex(&args.store)),
        Command::Pull(args) => runtime.block_on(pull(args, log_spec)),
        Command::Vod(command) => runtime.block_on(vod_command(command)),
        Command::Deliveries(DeliveriesCommand::List(args)) => {
            let configured: Vec<String> = match store_config(&args.store) {
                Ok(config) => config
                    .actions
                    .into_iter()
                    .map(|action| action.name)
                    .collect(),
                Err(code) => return code,
            };
            runtime.block_on(query(&args.store, async |reader, json| {
                if let Some(name) = args.action.as_deref() {
                    if !configured.iter().any(|known| known == name)
                        && reader.deliveries(None, Some(name), 1).await?.is_empty()
                    {
                        return Err(Failure::Usage(no_such_action(name, &configured)));
                    }
                }
                deliveries_list(reader, &args, json).await
            }))
        }
        Command::Deliveries(DeliveriesCommand::Show(args)) => {
            runtime.block_on(query(&args.store, async |reader, json| {
                inspect::delivery_show(reader, args.id, json)
                    .await?
                    .ok_or_else(|| Failure::NotFound(format!("no delivery {}", args.id)))
            }))
        }
        Command::Replay(args) => runtime.block_on(replay(args)),
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "vodhook", &mut script);
            write_out(&script);
            ExitCode::SUCCESS
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => {
                    write_out(&page);
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("vodhook: cannot render the man page: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor(args) => runtime.block_on(doctor(args)),
    }
}

/// `vodhook doctor`: one line per check; exit status 1 when one fails.
async fn doctor(args: DoctorArgs) -> ExitCode {
    let report = vodhook::doctor::run(vodhook::doctor::Options {
        config: args.config.config,
        overrides: Overrides::from_env(),
        public_ip: args.public_ip,
    })
    .await;
    if args.json {
        write_out(format!("{}\n", report.to_json()).as_bytes());
    } else {
        write_out(report.to_text().as_bytes());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--type NAME` as stored: a known type in any case is its canonical
/// name (`newfileupload` is `NewFileUpload`); a type outside the catalog
/// is taken as it is when events of it are stored; anything else is a
/// usage error naming the known types.
async fn event_type_filter(reader: &Reader, name: &str) -> Result<String, Failure> {
    if vodhook::events::EventKind::from_name(name).is_some() {
        return Ok(name.to_owned());
    }
    if let Some(kind) = vodhook::events::kind_ignoring_case(name) {
        return Ok(kind.name().to_owned());
    }
    let stored = EventFilter {
        event_type: Some(name.to_owned()),
        ..EventFilter::default()
    };
    if reader.count_events(&stored).await? > 0 {
        return Ok(name.to_owned());
    }
    Err(Failure::Usage(format!(
        "unknown event type {name:?} for --type; {}",
        vodhook::events::unknown_type_hint(name)
    )))
}

/// The answer to `--action NAME` that names no action.
fn no_such_action(name: &str, configured: &[String]) -> String {
    if configured.is_empty() {
        format!("no action named {name:?}: the configuration has no [[action]] and no delivery is recorded under that name")
    } else {
        format!(
            "no action named {name:?}; configured actions: {}",
            configured.join(", ")
        )
    }
}

async fn deliveries_list(
    reader: &Reader,
    args: &DeliveriesListArgs,
    json: bool,
) -> Result<String, Failure> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<DeliveryStatus>)
        .transpose()
        .map_err(Failure::Usage)?;
    Ok(inspect::deliveries_list(reader, status, args.action.as_deref(), args.limit, json).await?)
}

/// Exit status for a configuration or usage problem.
const USAGE: u8 = 2;

/// `print!` for a command's output; see [`write_out`].
macro_rules! out {
    ($($arg:tt)*) => {
        write_out(format!($($arg)*).as_bytes())
    };
}

/// `println!` for a command's output; see [`write_out`].
macro_rules! outln {
    ($($arg:tt)*) => {
        write_out(format!("{}\n", format_args!($($arg)*)).as_bytes())
    };
}

/// Writes a command's output on stdout. A reader that went away
/// (`vodhook events list | head`) ends the command quietly with status 0,
/// as other Unix tools do, instead of the panic of `print!`; any other
/// failure to write ends it with a one-line error and status 1. Not for
/// `serve` and `pull`, which log through `vodhook::log` and never stop for
/// stdout.
fn write_out(bytes: &[u8]) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(
            std::io::stderr(),
            "vodhook: cannot write to stdout: {error}"
        );
        std::process::exit(1);
    }
}

async fn serve(args: ServeArgs, log_spec: Option<&str>) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        path: args.path,
        log_format: args.log_format,
        max_body_bytes: args.max_body_bytes,
        db: args.db,
        admin_listen: args.admin_listen,
        ..Overrides::from_env()
    };
    daemon(args.config.config.as_deref(), overrides, true, log_spec).await
}

async fn pull(args: PullArgs, log_spec: Option<&str>) -> ExitCode {
    let overrides = Overrides {
        log_format: args.log_format,
        db: args.db,
        pull_admin_listen: args.admin_listen,
        ..Overrides::from_env()
    };
    daemon(args.config.config.as_deref(), overrides, false, log_spec).await
}

/// `serve` (with the HTTP listener) or `pull` (the queue consumer only).
async fn daemon(
    config_path: Option<&std::path::Path>,
    overrides: Overrides,
    http: bool,
    log_spec: Option<&str>,
) -> ExitCode {
    let mut config = match Config::load(config_path, overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vodhook: {error}");
            return ExitCode::from(USAGE);
        }
    };
    if !http {
        config.pull.enabled = true;
    }
    if config.pull.enabled {
        if let Err(error) = config.vod.client_options() {
            eprintln!("vodhook: {error}");
            return ExitCode::from(USAGE);
        }
    }
    // Held to the end: dropping it writes the lines still queued.
    let _log = match vodhook::log::init_at(config.log.format, log_spec) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            return ExitCode::from(USAGE);
        }
    };
    let shutdown = match vodhook::shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Metrics::default();
    tracing::debug!(db = %config.store.path.display(), "opening the event store");
    let store = match Store::open(&config.store.options(), metrics.clone()) {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot open the event store");
            return ExitCode::FAILURE;
        }
    };
    let main = if http {
        match TcpListener::bind(config.server.listen).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::error!(address = %config.server.listen, %error, "cannot listen");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    // `serve` and `pull` have an admin address each, so that both run on
    // one host. Validated at load, so neither can fail here.
    let admin_address = if http {
        config.admin.address()
    } else {
        config.admin.pull_address()
    };
    let admin = match admin_address.ok().flatten() {
        None => None,
        Some(address) => match TcpListener::bind(address).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                let key = if http {
                    "admin.listen"
                } else {
                    "admin.pull_listen"
                };
                tracing::error!(address = %address, %error, "cannot listen for metrics ({key}; empty turns it off)");
                return ExitCode::FAILURE;
            }
        },
    };
    let ingest =
        Ingest::new(store, metrics, config.verifier()).with_actions(Actions::new(&config.actions));
    match vodhook::run(config, Listeners { main, admin }, ingest, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot serve");
            ExitCode::FAILURE
        }
    }
}

/// `vod config show|set`, `vod queue`.
async fn vod_command(command: VodCommand) -> ExitCode {
    let (config_args, json) = match &command {
        VodCommand::Config(VodConfigCommand::Show(args)) | VodCommand::Queue(args) => {
            (&args.config, args.json)
        }
        VodCommand::Config(VodConfigCommand::Set(args)) => (&args.common.config, args.common.json),
    };
    let config = match Config::load(config_args.config.as_deref(), Overrides::from_env()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("vodhook: {error}");
            return ExitCode::from(USAGE);
        }
    };
    let client = match config
        .vod
        .client_options()
        .map_err(anyhow::Error::from)
        .and_then(VodClient::new)
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            return ExitCode::from(USAGE);
        }
    };
    let timeout = Duration::from_secs(15);
    let printed = match command {
        VodCommand::Config(VodConfigCommand::Show(_)) => client.describe_event_config(timeout).await.map(|config| {
            if json {
                serde_json::to_string(&config).unwrap_or_default()
            } else {
                let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
                format!(
                    "mode                 {}\nnotification url     {}\nupload events        {}\ndelete events        {}\npersistence events   {}",
                    show(&config.mode),
                    show(&config.notification_url),
                    show(&config.upload_media_complete_event_switch),
                    show(&config.delete_media_complete_event_switch),
                    show(&config.persistence_complete_event_switch)
                )
            }
        }),
        VodCommand::Config(VodConfigCommand::Set(args)) => {
            if let Some(Err(error)) = args.sign_key.as_deref().map(vodhook::sign::SignKey::new) {
                eprintln!("vodhook: --sign-key: {error}");
                return ExitCode::from(USAGE);
            }
            let change = EventConfigChange {
                mode: args.mode.map(|mode| mode.to_uppercase()),
                notification_url: args.url,
                upload: args.upload.map(|s| s.to_uppercase()),
                delete: args.delete.map(|s| s.to_uppercase()),
                persistence: args.persistence.map(|s| s.to_uppercase()),
                sign_key: args.sign_key,
            };
            if change == EventConfigChange::default() {
                eprintln!("vodhook: nothing to change: give --mode, --url, --upload, --delete, --persistence or --sign-key");
                return ExitCode::from(USAGE);
            }
            client
                .modify_event_config(&change, timeout)
                .await
                .map(|()| if json { r#"{"ok":true}"#.to_owned() } else { "event configuration updated".to_owned() })
        }
        VodCommand::Queue(_) => client.describe_events_state(timeout).await.map(|count| {
            if json {
                format!(r#"{{"count_of_events_to_pull":{count}}}"#)
            } else {
                format!(
                    "{} waiting in the queue (VOD's count lags by up to minutes)",
                    inspect::plural(count, "event", "events")
                )
            }
        }),
    };
    match printed {
        Ok(text) => {
            outln!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vodhook: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn send(args: SendArgs, verbose: bool) -> ExitCode {
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
    if verbose {
        outln!("{}", String::from_utf8_lossy(&body));
    }
    match send::post(&args.to, body, Duration::from_secs(args.timeout)).await {
        Ok(answer) => {
            outln!("{} {}", answer.status, answer.body.trim_end());
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

/// `vodhook send --story`: an upload and its task flow, one after the
/// other; stops at the first answer that is not 2xx.
async fn send_story(args: SendArgs) -> ExitCode {
    let (file_id, bodies) = send::story(args.file_id.clone());
    for (event_type, body) in bodies {
        let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
        match send::post(&args.to, body, Duration::from_secs(args.timeout)).await {
            Ok(answer) => {
                outln!(
                    "{event_type:<22} {} {}",
                    answer.status,
                    answer.body.trim_end()
                );
                if !(200..300).contains(&answer.status) {
                    eprintln!("vodhook: the receiver answered {}", answer.status);
                    return ExitCode::FAILURE;
                }
            }
            Err(error) => {
                eprintln!("vodhook: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    outln!("file {file_id}: see its journey with `vodhook file {file_id}`");
    ExitCode::SUCCESS
}

/// Loads the configuration as `serve` does (file, `--db`, environment) and
/// prints it, saying which values came from the environment.
fn check_config(args: CheckConfigArgs) -> ExitCode {
    let overrides = Overrides {
        db: args.db,
        ..Overrides::from_env()
    };
    let sources = overrides.from_environment();
    match Config::load(args.config.config.as_deref(), overrides) {
        Ok(config) => {
            match &args.config.config {
                Some(path) => outln!("# {}: valid", path.display()),
                None => outln!("# no --config given: defaults"),
            }
            let shown = config.to_toml_redacted();
            out!("{}", vodhook::config::annotate_sources(&shown, &sources));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vodhook: {error}");
            ExitCode::from(USAGE)
        }
    }
}

/// How a query command fails.
enum Failure {
    /// A usage mistake: exit status 2.
    Usage(String),
    /// Nothing found: exit status 1.
    NotFound(String),
    /// Anything else: exit status 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

fn store_config(args: &StoreArgs) -> Result<Config, ExitCode> {
    let overrides = Overrides {
        db: args.db.clone(),
        ..Overrides::default()
    };
    Config::load(args.config.config.as_deref(), overrides).map_err(|error| {
        eprintln!("vodhook: {error}");
        ExitCode::from(USAGE)
    })
}

/// Opens the store read-only and prints what `run` returns.
async fn query(
    args: &StoreArgs,
    run: impl AsyncFnOnce(&Reader, bool) -> Result<String, Failure>,
) -> ExitCode {
    let config = match store_config(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let outcome = match Reader::open(config.store.options().location()).await {
        Ok(reader) => run(&reader, args.json).await,
        Err(error) => Err(Failure::Other(error)),
    };
    match outcome {
        Ok(text) => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("vodhook: {message}");
            ExitCode::from(USAGE)
        }
        Err(Failure::NotFound(message)) => {
            eprintln!("vodhook: {message} in {}", config.store.path.display());
            ExitCode::FAILURE
        }
        Err(Failure::Other(error)) => {
            eprintln!("vodhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn reindex(args: &StoreArgs) -> ExitCode {
    let config = match store_config(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match store::reindex(&config.store.options()).await {
        Ok(report) => {
            if args.json {
                outln!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                outln!(
                    "reindexed {}: {}, {} ({} with a typed-parse error)",
                    inspect::plural(report.events, "event", "events"),
                    inspect::plural(report.tasks, "task", "tasks"),
                    inspect::plural(report.files, "file", "files"),
                    inspect::plural(report.parse_errors, "event", "events")
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vodhook replay`: queue deliveries again, or re-POST events elsewhere.
async fn replay(args: ReplayArgs) -> ExitCode {
    let config = match store_config(&args.store) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if args.ids.is_empty() && args.since.is_none() {
        eprintln!("vodhook: give event ids or --since");
        return ExitCode::from(USAGE);
    }
    let since_ms = match args
        .since
        .as_deref()
        .map(|s| inspect::parse_since(s, now_ms()))
    {
        Some(Err(error)) => {
            eprintln!("vodhook: {error}");
            return ExitCode::from(USAGE);
        }
        Some(Ok(ms)) => Some(ms),
        None => None,
    };
    let events = match Reader::open(config.store.options().location()).await {
        Ok(reader) => reader.raw_events(&args.ids, since_ms).await,
        Err(error) => Err(error),
    };
    let events = match events {
        Ok(events) => events,
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(missing) = args
        .ids
        .iter()
        .find(|id| !events.iter().any(|(row, _)| row.id == **id))
    {
        eprintln!(
            "vodhook: no event {missing} in {}",
            config.store.path.display()
        );
        return ExitCode::FAILURE;
    }
    if let Some(url) = args.to {
        let (mut sent, mut failed) = (0, 0);
        for (row, raw) in events {
            match send::post(&url, raw, Duration::from_secs(10)).await {
                Ok(answer) if (200..300).contains(&answer.status) => sent += 1,
                Ok(answer) => {
                    failed += 1;
                    eprintln!(
                        "vodhook: event {} answered {} {}",
                        row.id,
                        answer.status,
                        answer.body.trim()
                    );
                }
                Err(error) => {
                    failed += 1;
                    eprintln!("vodhook: event {}: {error:#}", row.id);
                }
            }
        }
        outln!(
            "{} sent to {url}, {failed} failed",
            inspect::plural(sent, "event", "events")
        );
        return if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let actions = Actions::new(&config.actions);
    if let Some(name) = &args.action {
        if !actions.contains(name) {
            eprintln!("vodhook: no action named {name:?} in the configuration");
            return ExitCode::from(USAGE);
        }
    }
    let mut pairs = Vec::new();
    for (row, raw) in &events {
        let Ok(event) = vodhook::events::Event::parse(raw) else {
            continue;
        };
        match &args.action {
            Some(name) => pairs.push((row.id, name.clone())),
            None => {
                let derived = vodhook::state::derive(&event);
                pairs.extend(
                    actions
                        .matching(&event, &derived)
                        .into_iter()
                        .map(|name| (row.id, name)),
                );
            }
        }
    }
    match store::enqueue_deliveries(&config.store.options(), &pairs).await {
        Ok(count) => {
            outln!(
                "queued {} for {}; the running daemon carries them out (see `vodhook deliveries list`)",
                inspect::plural(count as u64, "delivery", "deliveries"),
                inspect::plural(events.len() as u64, "event", "events")
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("vodhook: {error:#}");
            ExitCode::FAILURE
        }
    }
}
