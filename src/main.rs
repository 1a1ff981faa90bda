//! The `vodhook` binary: command-line parsing and wiring; the work is in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use vodhook::actions::Actions;
use vodhook::config::{Config, LogFormat, Overrides};
use vodhook::inspect::{self, Shown};
use vodhook::send::{self, TemplateOptions};
use vodhook::sign::SignKey;
use vodhook::store::{self, DeliveryStatus, EventFilter, Reader};
use vodhook::vod::{EventConfigChange, VodClient};
use vodhook::{App, Listeners};

/// mimalloc rather than glibc's malloc: per event the daemon allocates on
/// the tokio workers and frees on the writer thread (and back), and glibc's
/// arenas then take locks and wake each other; mimalloc cut the CPU per
/// request by about 9% (`docs/benchmarks.md`, "CPU per event").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
     (also `serve` and `pull` failing to start after reading the configuration: a TLS file,
     a port in use, the store)
  2  usage or configuration error: a bad flag or value, an invalid configuration

Configuration: --config PATH, else VODHOOK_CONFIG, else /etc/vodhook/vodhook.toml when it
exists, else the built-in defaults. Every command reads the same file: the query commands
take the database from its store.path.";

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

/// `--since`: an RFC 3339 time, a date or a duration ago, as ms since the epoch.
fn since(text: &str) -> Result<i64, String> {
    inspect::parse_since(text, store::now_ms())
}

/// `--sign-key`: as VOD allows it.
fn sign_key(text: &str) -> Result<SignKey, String> {
    SignKey::new(text)
        .map_err(|_| "expected 1 to 32 letters and digits (as VOD requires)".to_owned())
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
    /// Move the store: copy an SQLite file into a PostgreSQL database.
    #[command(subcommand)]
    Store(StoreCommand),
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
enum StoreCommand {
    /// Copy every event, task and file state, refused body, delivery and
    /// attempt of an SQLite file into a PostgreSQL database (a state the
    /// database has already is merged with the copied one). Running it
    /// again copies nothing twice.
    Copy(StoreCopyArgs),
}

#[derive(Debug, Args)]
struct StoreCopyArgs {
    /// The SQLite database file to copy from.
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    /// The PostgreSQL database to copy into: a postgres:// URL (password
    /// also from PGPASSWORD).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
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
    /// Every event received since an RFC 3339 time, a date (midnight UTC) or a duration ago (15m, 2h, 7d); with ids, the union (each event once).
    #[arg(long, value_name = "WHEN", value_parser = since)]
    since: Option<i64>,
    /// Only this action (run even where its filters do not match).
    #[arg(long, value_name = "NAME", conflicts_with = "to")]
    action: Option<String>,
    /// Instead of running actions, POST the stored raw events to this URL
    /// (signed with the configured SignKey, as `send` does).
    #[arg(long, value_name = "URL")]
    to: Option<String>,
    #[command(flatten)]
    signing: SigningArgs,
}

/// How `send` and `replay --to` sign what they post.
#[derive(Debug, Args)]
struct SigningArgs {
    /// Sign with this SignKey [default: auth.sign_key of the configuration, or VODHOOK_SIGN_KEY].
    #[arg(long, value_name = "KEY", value_parser = sign_key, conflicts_with = "unsigned")]
    sign_key: Option<SignKey>,
    /// Send without a signature, even when a SignKey is configured.
    #[arg(long)]
    unsigned: bool,
}

#[derive(Debug, Args)]
struct PullArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file, or a postgres:// URL shared by several
    /// instances [default: store.url, store.path, ./vodhook.db].
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "VODHOOK_DB",
        hide_env_values = true
    )]
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
    #[arg(long, value_enum)]
    mode: Option<VodMode>,
    /// The v3 callback URL ("" clears it).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// NewFileUpload events.
    #[arg(long, value_enum)]
    upload: Option<Switch>,
    /// FileDeleted events.
    #[arg(long, value_enum)]
    delete: Option<Switch>,
    /// PersistenceComplete events.
    #[arg(long, value_enum)]
    persistence: Option<Switch>,
    /// The callback SignKey (letters and digits, at most 32).
    #[arg(long, value_name = "KEY")]
    sign_key: Option<String>,
}

/// `vod config set --mode`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum VodMode {
    /// Normal callbacks, POSTed to the URL.
    Push,
    /// The reliable-callback queue (PullEvents).
    Pull,
}

/// An event switch of `vod config set`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Switch {
    /// VOD sends these events.
    On,
    /// VOD does not send them.
    Off,
}

impl Switch {
    /// The API's spelling.
    fn api(self) -> String {
        match self {
            Switch::On => "ON",
            Switch::Off => "OFF",
        }
        .to_owned()
    }
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
    /// SQLite database file, or a postgres:// URL shared by several
    /// instances [default: store.url, store.path, ./vodhook.db].
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "VODHOOK_DB",
        hide_env_values = true
    )]
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
    #[arg(long, value_name = "WHEN", value_parser = since)]
    since: Option<i64>,
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
    /// TOML configuration file (see config.example.toml) [default: /etc/vodhook/vodhook.toml when it exists, else built-in defaults; an empty VODHOOK_CONFIG reads no file].
    #[arg(long, short = 'c', value_name = "PATH", env = "VODHOOK_CONFIG")]
    config: Option<PathBuf>,
}

/// The configuration file read without `--config` when it exists.
const DEFAULT_CONFIG: &str = "/etc/vodhook/vodhook.toml";

impl ConfigArgs {
    /// The file to read: `--config` (or `VODHOOK_CONFIG`), else
    /// [`DEFAULT_CONFIG`] when it exists; none for an empty value.
    fn path(&self) -> Option<PathBuf> {
        config_path(self.config.as_deref(), Path::new(DEFAULT_CONFIG))
    }
}

/// See [`ConfigArgs::path`]; `default` is a parameter for tests.
fn config_path(given: Option<&Path>, default: &Path) -> Option<PathBuf> {
    let explicitly_none = std::env::var_os("VODHOOK_CONFIG").is_some_and(|value| value.is_empty());
    match given {
        Some(path) if path.as_os_str().is_empty() => None,
        Some(path) => Some(path.to_owned()),
        None if explicitly_none => None,
        None => default.is_file().then(|| default.to_owned()),
    }
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file or postgres:// URL, as `serve --db`
    /// [default: store.url, store.path].
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "VODHOOK_DB",
        hide_env_values = true
    )]
    db: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// SQLite database file, or a postgres:// URL shared by several
    /// instances [default: store.url, store.path, ./vodhook.db].
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "VODHOOK_DB",
        hide_env_values = true
    )]
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
    /// The configuration whose SignKey signs the events.
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    signing: SigningArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.exit(),
    }
}

/// How a command fails. [`CliError::exit`] is the one place that prints
/// the error and picks the exit status (see [`EXIT_STATUS`]).
#[derive(Debug)]
enum CliError {
    /// A usage or configuration mistake: status 2.
    Usage(String),
    /// Nothing found: status 1.
    NotFound(String),
    /// A failure at run time: status 1.
    Failed(anyhow::Error),
    /// A failure already reported (in the daemon's log, in the doctor's
    /// report): status 1, nothing more printed.
    Reported,
}

impl CliError {
    /// One line on stderr (none for [`CliError::Reported`]) and the status.
    fn exit(self) -> ExitCode {
        match self {
            CliError::Usage(message) => {
                note(&message);
                ExitCode::from(2)
            }
            CliError::NotFound(message) => {
                note(&message);
                ExitCode::FAILURE
            }
            CliError::Failed(error) => {
                note(&format!("{error:#}"));
                ExitCode::FAILURE
            }
            CliError::Reported => ExitCode::FAILURE,
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::Failed(error)
    }
}

impl From<vodhook::config::ConfigError> for CliError {
    fn from(error: vodhook::config::ConfigError) -> Self {
        CliError::Usage(error.to_string())
    }
}

/// A line for the user on stderr (stdout stays the command's output).
fn note(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "vodhook: {message}");
}

fn run(cli: Cli) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the runtime: {error}"))?;
    let log_spec = vodhook::log::verbosity_spec(cli.quiet, cli.verbose);
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args, log_spec)),
        Command::Send(args) if args.story => runtime.block_on(send_story(args)),
        Command::Send(args) => runtime.block_on(send(args, cli.verbose > 0)),
        Command::CheckConfig(args) => check_config(args),
        Command::Events(EventsCommand::List(args)) => {
            runtime.block_on(query(&args.store, async |reader, json| {
                let event_type = match args.event_type.as_deref() {
                    None => None,
                    Some(name) => Some(event_type_filter(reader, name).await?),
                };
                let filter = EventFilter {
                    event_type,
                    file_id: args.file_id.clone(),
                    task_id: args.task_id.clone(),
                    since_ms: args.since,
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
                    note(&format!(
                        "showing {} of {total} events (newest first); use --limit N for more",
                        filter.limit
                    ));
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
                None => Err(CliError::NotFound(format!("no event {}", args.id))),
            },
        )),
        Command::Events(EventsCommand::Rejected(args)) => runtime
            .block_on(query(&args.store, async |reader, json| {
                Ok(inspect::rejected_list(reader, args.limit, json).await?)
            })),
        Command::File(args) => runtime.block_on(query(&args.store, async |reader, json| {
            inspect::file_view(reader, &args.id, json)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("nothing known about file {}", args.id)))
        })),
        Command::Task(args) => runtime.block_on(query(&args.store, async |reader, json| {
            inspect::task_view(reader, &args.id, json)
                .await?
                .ok_or_else(|| CliError::NotFound(format!("nothing known about task {}", args.id)))
        })),
        Command::Reindex(args) => runtime.block_on(reindex(&args.store)),
        Command::Store(StoreCommand::Copy(args)) => runtime.block_on(store_copy(args)),
        Command::Pull(args) => runtime.block_on(pull(args, log_spec)),
        Command::Vod(command) => runtime.block_on(vod_command(command)),
        Command::Deliveries(DeliveriesCommand::List(args)) => {
            let configured: Vec<String> = store_config(&args.store)?
                .actions
                .into_iter()
                .map(|action| action.name)
                .collect();
            runtime.block_on(query(&args.store, async |reader, json| {
                if let Some(name) = args.action.as_deref() {
                    if !configured.iter().any(|known| known == name)
                        && reader.deliveries(None, Some(name), 1).await?.is_empty()
                    {
                        return Err(CliError::Usage(no_such_action(name, &configured)));
                    }
                }
                deliveries_list(reader, &args, json).await
            }))
        }
        Command::Deliveries(DeliveriesCommand::Show(args)) => {
            runtime.block_on(query(&args.store, async |reader, json| {
                inspect::delivery_show(reader, args.id, json)
                    .await?
                    .ok_or_else(|| CliError::NotFound(format!("no delivery {}", args.id)))
            }))
        }
        Command::Replay(args) => runtime.block_on(replay(args)),
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "vodhook", &mut script);
            write_out(&script);
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .map_err(|error| anyhow::anyhow!("cannot render the man page: {error}"))?;
            write_out(&page);
            Ok(())
        }
        Command::Doctor(args) => runtime.block_on(doctor(args)),
    }
}

/// `vodhook doctor`: one line per check; exit status 1 when one fails.
async fn doctor(args: DoctorArgs) -> Result<(), CliError> {
    let report = vodhook::doctor::run(vodhook::doctor::Options {
        config: args.config.path(),
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
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

/// `--type NAME` as stored: a known type in any case is its canonical
/// name (`newfileupload` is `NewFileUpload`); a type outside the catalog
/// is taken as it is when events of it are stored; anything else is a
/// usage error naming the known types.
async fn event_type_filter(reader: &Reader, name: &str) -> Result<String, CliError> {
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
    Err(CliError::Usage(format!(
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
) -> Result<String, CliError> {
    let status = args
        .status
        .as_deref()
        .map(str::parse::<DeliveryStatus>)
        .transpose()
        .map_err(CliError::Usage)?;
    Ok(inspect::deliveries_list(reader, status, args.action.as_deref(), args.limit, json).await?)
}

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
        note(&format!("cannot write to stdout: {error}"));
        std::process::exit(1);
    }
}

async fn serve(args: ServeArgs, log_spec: Option<&str>) -> Result<(), CliError> {
    let overrides = Overrides {
        listen: args.listen,
        path: args.path,
        log_format: args.log_format,
        max_body_bytes: args.max_body_bytes,
        db: args.db,
        admin_listen: args.admin_listen,
        ..Overrides::from_env()
    };
    daemon(args.config.path().as_deref(), overrides, true, log_spec).await
}

async fn pull(args: PullArgs, log_spec: Option<&str>) -> Result<(), CliError> {
    let overrides = Overrides {
        log_format: args.log_format,
        db: args.db,
        pull_admin_listen: args.admin_listen,
        ..Overrides::from_env()
    };
    daemon(args.config.path().as_deref(), overrides, false, log_spec).await
}

/// `serve` (with the HTTP listener) or `pull` (the queue consumer only).
/// Errors before the logger starts are usage errors on stderr; after,
/// they are logged and the status is 1.
async fn daemon(
    config_path: Option<&Path>,
    overrides: Overrides,
    http: bool,
    log_spec: Option<&str>,
) -> Result<(), CliError> {
    let mut config = Config::load(config_path, overrides)?;
    if !http {
        // `vodhook pull` always runs the consumer, so it needs the
        // credentials `[pull] enabled` does (checked at load for `serve`).
        config.pull.enabled = true;
        config.vod.client_options()?;
    }
    // Held to the end: dropping it writes the lines still queued.
    let _log = vodhook::log::init_at(config.log.format, log_spec)
        .map_err(|error| CliError::Usage(format!("{error:#}")))?;
    let failed = |error: &dyn std::fmt::Display, message: &str| {
        tracing::error!(error = %error, "{message}");
        CliError::Reported
    };
    let shutdown = vodhook::shutdown_signal()
        .map_err(|error| failed(&error, "cannot install signal handlers"))?;
    // Bound before the store is opened: a serve that cannot start leaves
    // no database file behind.
    let main = if http {
        let listener = vodhook::server::bind(config.server.listen).map_err(|error| {
            tracing::error!(address = %config.server.listen, %error, "cannot listen");
            CliError::Reported
        })?;
        Some(listener)
    } else {
        None
    };
    // `serve` and `pull` have an admin address each, so that both run on
    // one host (parsed at load; `None` is off).
    let admin_address = if http {
        config.admin.listen
    } else {
        config.admin.pull_listen
    };
    let admin = match admin_address {
        None => None,
        Some(address) => Some(vodhook::server::bind(address).map_err(|error| {
            let key = if http {
                "admin.listen"
            } else {
                "admin.pull_listen"
            };
            tracing::error!(address = %address, %error, "cannot listen for metrics ({key}; empty turns it off)");
            CliError::Reported
        })?),
    };
    let app = App::build(config).map_err(|error| failed(&error, "cannot serve"))?;
    app.run(Listeners { main, admin }, shutdown)
        .await
        .map_err(|error| failed(&format!("{error:#}"), "cannot serve"))
}

/// `vod config show|set`, `vod queue`.
async fn vod_command(command: VodCommand) -> Result<(), CliError> {
    let (config_args, json) = match &command {
        VodCommand::Config(VodConfigCommand::Show(args)) | VodCommand::Queue(args) => {
            (&args.config, args.json)
        }
        VodCommand::Config(VodConfigCommand::Set(args)) => (&args.common.config, args.common.json),
    };
    let config = Config::load_values(config_args.path().as_deref(), Overrides::from_env())?;
    let client = config
        .vod
        .client_options()
        .map_err(anyhow::Error::from)
        .and_then(VodClient::new)
        .map_err(|error| CliError::Usage(format!("{error:#}")))?;
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
            if let Some(Err(error)) = args.sign_key.as_deref().map(SignKey::new) {
                return Err(CliError::Usage(format!("--sign-key: {error}")));
            }
            let change = EventConfigChange {
                mode: args.mode.map(|mode| match mode {
                    VodMode::Push => "PUSH".to_owned(),
                    VodMode::Pull => "PULL".to_owned(),
                }),
                notification_url: args.url,
                upload: args.upload.map(Switch::api),
                delete: args.delete.map(Switch::api),
                persistence: args.persistence.map(Switch::api),
                sign_key: args.sign_key,
            };
            if change == EventConfigChange::default() {
                return Err(CliError::Usage("nothing to change: give --mode, --url, --upload, --delete, --persistence or --sign-key".to_owned()));
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
    let text = printed.map_err(|error| CliError::Failed(error.into()))?;
    outln!("{text}");
    Ok(())
}

/// The signature `send` and `replay --to` put on what they post:
/// `--unsigned` none, else `--sign-key`, else the configuration's SignKey
/// (`auth.sign_key`, `VODHOOK_SIGN_KEY`), else none.
fn signature(
    signing: &SigningArgs,
    config: &ConfigArgs,
) -> Result<Option<send::Signature>, CliError> {
    if signing.unsigned {
        return Ok(None);
    }
    let key = match &signing.sign_key {
        Some(key) => Some(key.clone()),
        None => {
            Config::load_values(config.path().as_deref(), Overrides::from_env())?
                .auth
                .sign_key
        }
    };
    let now = store::now_ms() / 1000;
    Ok(key.map(|key| send::Signature::new(&key, now)))
}

/// What `send` prints on stderr about the signature it put on an event.
fn note_signature(signature: Option<&send::Signature>) {
    if let Some(signature) = signature {
        note(&format!(
            "signed with the SignKey: T={} (UNIX seconds, the signature's expiry)",
            signature.t
        ));
    }
}

/// The answer of a receiver: printed, and an error unless 2xx.
fn answered(answer: &send::Answer, label: &str) -> Result<(), CliError> {
    outln!("{label}{} {}", answer.status, answer.body_for_people());
    if (200..300).contains(&answer.status) {
        Ok(())
    } else {
        Err(CliError::Failed(anyhow::anyhow!(
            "the receiver answered {}",
            answer.status
        )))
    }
}

async fn send(args: SendArgs, verbose: bool) -> Result<(), CliError> {
    let signature = signature(&args.signing, &args.config)?;
    let body = match (&args.file, &args.event_type) {
        (Some(path), _) => {
            let body = std::fs::read(path).map_err(|error| {
                CliError::Usage(format!("cannot read {}: {error}", path.display()))
            })?;
            signed_bytes(body, signature.as_ref())
        }
        (None, Some(event_type)) => {
            let options = TemplateOptions {
                file_id: args.file_id.clone(),
                legacy: args.legacy,
            };
            let body = send::template(event_type, &options).map_err(CliError::Usage)?;
            signed_json(body, signature.as_ref())
        }
        (None, None) => return Err(CliError::Usage("give an event type or --file".to_owned())),
    };
    if verbose {
        outln!("{}", String::from_utf8_lossy(&body));
    }
    note_signature(signature.as_ref());
    let answer = post(&args, body, signature.as_ref()).await?;
    answered(&answer, "")
}

/// `body` as posted: with the signature put in, when there is one.
fn signed_bytes(body: Vec<u8>, signature: Option<&send::Signature>) -> Vec<u8> {
    match signature {
        Some(signature) => signature.apply_to_bytes(body),
        None => body,
    }
}

/// A template as posted: with the signature put in, when there is one,
/// as pretty JSON.
fn signed_json(mut body: serde_json::Value, signature: Option<&send::Signature>) -> Vec<u8> {
    if let Some(signature) = signature {
        signature.apply(&mut body);
    }
    serde_json::to_vec_pretty(&body).unwrap_or_default()
}

/// Posts `body` to the receiver `send` was given.
async fn post(
    args: &SendArgs,
    body: Vec<u8>,
    signature: Option<&send::Signature>,
) -> Result<send::Answer, CliError> {
    let timeout = Duration::from_secs(args.timeout);
    Ok(send::post(&args.to, body, signature, timeout).await?)
}

/// `vodhook send --story`: an upload and its task flow, one after the
/// other; stops at the first answer that is not 2xx.
async fn send_story(args: SendArgs) -> Result<(), CliError> {
    let signature = signature(&args.signing, &args.config)?;
    note_signature(signature.as_ref());
    let (file_id, bodies) = send::story(args.file_id.clone());
    for (event_type, body) in bodies {
        let body = signed_json(body, signature.as_ref());
        let answer = post(&args, body, signature.as_ref()).await?;
        answered(&answer, &format!("{event_type:<22} "))?;
    }
    outln!("file {file_id}: see its journey with `vodhook file {file_id}`");
    Ok(())
}

/// Loads the configuration as `serve` does (file, `--db`, environment),
/// runs every start-up check `serve` runs short of opening the store and
/// binding ([`App::check`]), and prints it, saying which values came from
/// the environment.
fn check_config(args: CheckConfigArgs) -> Result<(), CliError> {
    let overrides = Overrides {
        db: args.db,
        ..Overrides::from_env()
    };
    let sources = overrides.from_environment();
    let path = args.config.path();
    let config = Config::load(path.as_deref(), overrides)?;
    App::check(&config).map_err(|error| CliError::Usage(format!("{error:#}")))?;
    match &path {
        Some(path) => outln!("# {}: valid", path.display()),
        None => outln!("# no configuration file: defaults"),
    }
    let shown = config.to_toml_redacted();
    out!("{}", vodhook::config::annotate_sources(&shown, &sources));
    Ok(())
}

/// The configuration of a command that reads the store: the file as for
/// `serve`, with `--db` over `store.path`.
fn store_config(args: &StoreArgs) -> Result<Config, CliError> {
    let overrides = Overrides {
        db: args.db.clone(),
        ..Overrides::default()
    };
    Ok(Config::load_values(
        args.config.path().as_deref(),
        overrides,
    )?)
}

/// Opens the store read-only and prints what `run` returns; "not found"
/// names the database.
async fn query(
    args: &StoreArgs,
    run: impl AsyncFnOnce(&Reader, bool) -> Result<String, CliError>,
) -> Result<(), CliError> {
    let config = store_config(args)?;
    let reader = Reader::open(config.store.options().location()).await?;
    match run(&reader, args.json).await {
        Ok(text) => {
            out!("{text}");
            Ok(())
        }
        Err(CliError::NotFound(message)) => Err(CliError::NotFound(format!(
            "{message} in {}",
            config.store.location()
        ))),
        Err(error) => Err(error),
    }
}

/// `vodhook store copy`: progress on stderr, the summary on stdout.
async fn store_copy(args: StoreCopyArgs) -> Result<(), CliError> {
    if !store::pg::is_url(&args.to) {
        return Err(CliError::Usage(format!(
            "--to must be a postgres:// or postgresql:// URL, got {}",
            vodhook::redact::redact(&args.to)
        )));
    }
    let started = std::time::Instant::now();
    let mut shown = std::time::Instant::now();
    let report = store::pg::copy_from_sqlite(&args.from, &args.to, |done, total| {
        if shown.elapsed() >= std::time::Duration::from_secs(1) || done == total {
            note(&format!("copied {done} of {total} events"));
            shown = std::time::Instant::now();
        }
    })
    .await?;
    if args.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        outln!(
            "copied {} of {} read ({} already there), {}, {}, {}, {}, {} in {:.1} s",
            inspect::plural(report.events_copied, "event", "events"),
            report.events_read,
            report.events_read - report.events_copied,
            inspect::plural(report.tasks_copied, "task state", "task states"),
            inspect::plural(report.files_copied, "file state", "file states"),
            inspect::plural(report.deliveries_copied, "delivery", "deliveries"),
            inspect::plural(report.attempts_copied, "attempt", "attempts"),
            inspect::plural(report.rejected_copied, "refused body", "refused bodies"),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

async fn reindex(args: &StoreArgs) -> Result<(), CliError> {
    let config = store_config(args)?;
    let report = store::reindex(&config.store.options()).await?;
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
    Ok(())
}

/// `vodhook replay`: queue deliveries again, or re-POST events elsewhere.
/// Events named by id and by `--since` are taken once each.
async fn replay(args: ReplayArgs) -> Result<(), CliError> {
    let config = store_config(&args.store)?;
    if args.ids.is_empty() && args.since.is_none() {
        return Err(CliError::Usage("give event ids or --since".to_owned()));
    }
    let json = args.store.json;
    let reader = Reader::open(config.store.options().location()).await?;
    let events = vodhook::replay::select(&reader, &args.ids, args.since).await?;
    if let Some(missing) = args
        .ids
        .iter()
        .find(|id| !events.iter().any(|(row, _)| row.id == **id))
    {
        return Err(CliError::NotFound(format!(
            "no event {missing} in {}",
            config.store.location()
        )));
    }
    if let Some(url) = &args.to {
        let signature = signature(&args.signing, &args.store.config)?;
        let mut failed = Vec::new();
        for (row, raw) in &events {
            let body = signed_bytes(raw.clone(), signature.as_ref());
            let failure =
                match send::post(url, body, signature.as_ref(), Duration::from_secs(10)).await {
                    Ok(answer) if (200..300).contains(&answer.status) => continue,
                    Ok(answer) => format!(
                        "answered {} {}",
                        answer.status,
                        answer.body_for_people().trim_start()
                    ),
                    Err(error) => format!("{error:#}"),
                };
            note(&format!("event {}: {failure}", row.id));
            failed.push(serde_json::json!({ "id": row.id, "error": failure }));
        }
        let sent = events.len() - failed.len();
        let url = vodhook::redact::redact(url);
        if json {
            outln!(
                "{}",
                serde_json::json!({ "to": url, "sent": sent, "failed": failed })
            );
        } else {
            outln!(
                "{} sent to {url}, {} failed",
                inspect::plural(sent as u64, "event", "events"),
                failed.len()
            );
        }
        return if failed.is_empty() {
            Ok(())
        } else {
            Err(CliError::Reported)
        };
    }
    let actions = Actions::new(&config.actions);
    if let Some(name) = &args.action {
        if !actions.contains(name) {
            return Err(CliError::Usage(format!(
                "no action named {name:?} in the configuration"
            )));
        }
    }
    let pairs = vodhook::replay::deliveries(
        &actions,
        events.iter().map(|(row, raw)| (row.id, raw.as_slice())),
        args.action.as_deref(),
    );
    let count = store::enqueue_deliveries(&config.store.options(), &pairs).await?;
    if json {
        let deliveries: Vec<_> = pairs
            .iter()
            .map(|(event, action)| serde_json::json!({ "event_id": event, "action": action }))
            .collect();
        outln!(
            "{}",
            serde_json::json!({ "queued": count, "events": events.len(), "deliveries": deliveries })
        );
    } else {
        outln!(
            "queued {} for {}; the running daemon carries them out (see `vodhook deliveries list`)",
            inspect::plural(count as u64, "delivery", "deliveries"),
            inspect::plural(events.len() as u64, "event", "events")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_read_only_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("vodhook.toml");
        let given = dir.path().join("given.toml");
        // VODHOOK_CONFIG is not set in `cargo test` runs of this crate's
        // unit tests unless the caller sets it; an empty one means "none".
        if std::env::var_os("VODHOOK_CONFIG").is_some() {
            return;
        }
        assert_eq!(config_path(None, &default), None);
        std::fs::write(&default, "").unwrap();
        assert_eq!(config_path(None, &default), Some(default.clone()));
        assert_eq!(config_path(Some(&given), &default), Some(given.clone()));
        assert_eq!(config_path(Some(Path::new("")), &default), None);
    }

    #[test]
    fn since_and_switches_are_parsed_by_clap() {
        let error =
            Cli::try_parse_from(["vodhook", "events", "list", "--since", "yesterday"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let error = Cli::try_parse_from(["vodhook", "vod", "config", "set", "--upload", "yes"])
            .unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        Cli::command().debug_assert();
    }
}
