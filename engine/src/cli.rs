//! The `statefun` command line: `run`, `validate`, `describe`, `bench`.
//!
//! A user binary that registers Rust functions calls [`run_from_args`] with
//! its registry and gets the same command line as the stock `statefun`.
//!
//! `run`, `validate`, `describe` and `kafka lag` take the app's module as one
//! module.yaml or as several files and directories (each directory: its
//! `*.yaml` and `*.yml` files, in name order), loaded as one module by
//! [`statefun_module::load_files`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use statefun_module::Severity;

use crate::app::{FunctionErrorPolicy, Settings};
use crate::dataflow::{self, ClusterConfig};
use crate::registry::FunctionRegistry;
use crate::remote::RemoteFailurePolicy;
use crate::restart::RestartPolicy;
use crate::runner::{run_module, RunError, RunOptions};
use crate::shared::Shared;
use statefun_sdk::TypeName;

/// Stateful functions on timely-dataflow, configured by a StateFun module.yaml.
#[derive(Parser, Debug)]
#[command(
    name = "statefun",
    version,
    disable_help_flag = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print help.
    #[arg(long, global = true, action = ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the application described by a module.yaml (or several module files).
    Run(Box<RunArgs>),
    /// Check a module.yaml (or several module files) and print a summary; exits 1 on errors.
    Validate {
        /// The module.yaml file; several files and directories (their `*.yaml` and `*.yml`
        /// files, in name order) load as one module.
        #[arg(value_name = "MODULE", required = true, num_args = 1..)]
        module: Vec<PathBuf>,
        /// Also print the routing table.
        #[arg(long)]
        verbose: bool,
    },
    /// Print the summary and routing table of a module.yaml (or several module files).
    Describe {
        /// The module.yaml file; several files and directories (their `*.yaml` and `*.yml`
        /// files, in name order) load as one module.
        #[arg(value_name = "MODULE", required = true, num_args = 1..)]
        module: Vec<PathBuf>,
    },
    /// Measure throughput: generator → keyed counter → discard, against a hand-written timely baseline.
    Bench(crate::bench::BenchArgs),
    /// List the checkpoints in a state directory (safe while a job runs).
    Checkpoints {
        /// The state directory (`--state-dir` of `run`); for a cluster whose processes kept
        /// their own, every process's directory (copied or mounted here).
        #[arg(required = true, num_args = 1..)]
        state_dirs: Vec<PathBuf>,
    },
    /// Kafka tools.
    Kafka {
        #[command(subcommand)]
        command: KafkaCommand,
    },
    /// Watch a running job: rates, lag, latencies and checkpoints from the /metrics
    /// endpoints (--metrics-addr) of its processes, refreshed every second.
    Top(crate::top::TopArgs),
}

#[derive(Subcommand, Debug)]
enum KafkaCommand {
    /// Per Kafka ingress and partition: where the job is (the newest checkpoint every
    /// worker completed, or the consumer group's committed offset), the high watermark,
    /// and the lag between them. Reads no record and changes nothing (safe while the
    /// job runs).
    Lag {
        /// The module.yaml file; several files and directories (their `*.yaml` and `*.yml`
        /// files, in name order) load as one module.
        #[arg(value_name = "MODULE", required = true, num_args = 1..)]
        module: Vec<PathBuf>,
        /// The job's state directory (`--state-dir` of `run`): positions come from the
        /// checkpoint a restart would resume from. Given once per process of a cluster
        /// whose processes keep their own (copied or mounted together), they are read as
        /// one job. Without it, from the consumer group.
        #[arg(long = "state-dir")]
        state_dir: Vec<PathBuf>,
    },
}

/// Timely cluster arguments, shared by `run` and `bench`.
#[derive(Args, Debug, Clone)]
pub struct TimelyArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0..n.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one host:port per process (default localhost:2101+i).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// The processes' addresses inline: a pattern with `{i}` for the process index
    /// (`statefun-{i}.statefun:2101`, a StatefulSet's pods behind a headless Service) or a
    /// comma-separated list.
    #[arg(long = "hosts", conflicts_with = "hostfile")]
    pub hosts: Option<String>,
    /// Take this process's index from the ordinal at the end of the host name
    /// (`statefun-3` → 3), as a Kubernetes StatefulSet names its pods; instead of -p.
    #[arg(long = "process-from-hostname", conflicts_with = "process")]
    pub process_from_hostname: bool,
}

impl TimelyArgs {
    /// The cluster position these arguments describe; with `--process-from-hostname`, an
    /// error if the host name ends in no ordinal.
    pub fn cluster(&self) -> Result<ClusterConfig, String> {
        let process = if self.process_from_hostname {
            let hostname = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .unwrap_or_default();
            crate::dataflow::hostname_ordinal(&hostname).ok_or_else(|| {
                format!(
                    "--process-from-hostname: the host name `{}` does not end in `-<number>` \
                     (a StatefulSet pod is named `<set>-<ordinal>`); give -p instead",
                    hostname.trim()
                )
            })?
        } else {
            self.process
        };
        Ok(ClusterConfig {
            workers: self.workers,
            processes: self.processes,
            process,
            hostfile: self.hostfile.clone(),
            hosts: self.hosts.clone(),
        })
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The module.yaml file; several files and directories (their `*.yaml` and `*.yml`
    /// files, in name order) load as one module.
    #[arg(value_name = "MODULE", required = true, num_args = 1..)]
    module: Vec<PathBuf>,
    /// Keep state durable in this directory (one RocksDB database per worker)
    /// and checkpoint it; a run on an existing directory resumes from its
    /// newest complete checkpoint. Implies `--state-backend rocksdb`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// `memory` (default without --state-dir: nothing survives the process) or
    /// `rocksdb` (durable, checkpointed; in ./statefun-state unless --state-dir).
    #[arg(long, value_parser = ["memory", "rocksdb"])]
    state_backend: Option<String>,
    /// Time between checkpoints with durable state, e.g. `1s` (default), `200ms`.
    #[arg(long, value_parser = statefun_module::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// RocksDB block cache per worker, in MiB (default 64; state beyond it is read from disk).
    #[arg(long)]
    block_cache_mb: Option<usize>,
    /// RocksDB memtables per worker, in MiB (default 512: four of 128).
    #[arg(long)]
    write_buffer_mb: Option<usize>,
    /// The hot table of state values kept in memory per worker, in MiB (default 256).
    #[arg(long)]
    state_cache_mb: Option<usize>,
    /// A YAML file with run settings (`state-dir`, `state-backend`,
    /// `checkpoint-interval`, `block-cache-mb`, `write-buffer-mb`, `state-cache-mb`,
    /// `metrics-addr`); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Epoch length in milliseconds: the unit of progress.
    #[arg(long, default_value_t = 10)]
    epoch_ms: u64,
    /// Function→function hops per epoch before a cascade moves to the next epoch.
    #[arg(long, default_value_t = 128)]
    hop_cap: u32,
    /// Seconds between progress log lines.
    #[arg(long, default_value_t = 5.0)]
    log_interval: f64,
    /// When a remote function fails for good (after retries within its call
    /// timeout): `fail` stops the job; `dead-letter=<egress id>[:<topic or
    /// stream>]` sends the batch's messages to that egress (a Kafka or Kinesis
    /// egress needs the topic or stream) and goes on.
    #[arg(long, default_value = "fail", value_parser = parse_remote_failure)]
    on_remote_failure: RemoteFailurePolicy,
    /// When an embedded (Rust) function returns an error, a message is for a
    /// function type nothing serves, or a record is for an undeclared egress:
    /// `fail` (default, as upstream StateFun: the job stops, and with
    /// `--state-dir` a restart resumes from the last checkpoint, so nothing is
    /// lost), `skip` (counted, logged, dropped) or `dead-letter=<egress
    /// id>[:<topic or stream>]` (the message goes to that egress).
    #[arg(long, default_value = "fail", value_parser = parse_function_error)]
    on_function_error: FunctionErrorPolicy,
    /// After a failure: `no` (default: exit non-zero, for systemd or
    /// Kubernetes to restart), or `on-failure[:max=N,backoff=1s..60s]`: run
    /// the job again in this process from the last checkpoint, after a
    /// backoff that doubles with each failure in a row, logging the cause.
    #[arg(long, default_value = "no", value_parser = RestartPolicy::parse)]
    restart: RestartPolicy,
    /// With several processes: how long this one waits for every other one
    /// to connect before it gives up with an error (timely would wait forever
    /// for a process that died before the job formed).
    #[arg(long, default_value = "5min", value_parser = statefun_module::parse_duration)]
    connect_timeout: Duration,
    /// What an ingress record without a non-empty UTF-8 key (the function
    /// id) or without a value (a Kafka tombstone) does: `skip` (counted,
    /// logged) or `fail` (the job stops, naming the record). An ingress's
    /// `badRecords` in module.yaml wins (it can also dead-letter them).
    #[arg(long, default_value = "skip", value_parser = ["skip", "fail"])]
    on_bad_record: String,
    /// Serve `/metrics` (Prometheus, OpenMetrics text), `/healthz` and `/readyz` on
    /// this HOST:PORT, e.g. `0.0.0.0:9249` (also `metrics-addr` in `--config`).
    #[arg(long)]
    metrics_addr: Option<String>,
    #[command(flatten)]
    timely: TimelyArgs,
}

/// The environment variable that keeps transparent huge pages on (mimalloc's own name for
/// the setting, so one switch serves both).
pub const HUGE_PAGES_ENV: &str = "MIMALLOC_ALLOW_THP";

/// Whether the process keeps transparent huge pages, given [`HUGE_PAGES_ENV`]'s value:
/// only when it says `1`, `true`, `yes` or `on` (any case). mimalloc reads the variable
/// more loosely (an empty value or any other non-zero number also enables its huge page
/// requests); for those the process switch stays off, and off wins.
///
/// ```
/// use statefun_engine::cli::keeps_huge_pages;
/// assert!(!keeps_huge_pages(None));
/// assert!(keeps_huge_pages(Some("On")));
/// assert!(!keeps_huge_pages(Some("0")));
/// ```
pub fn keeps_huge_pages(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        ["1", "true", "yes", "on"]
            .iter()
            .any(|yes| v.trim().eq_ignore_ascii_case(yes))
    })
}

/// Switches transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`)
/// unless [`HUGE_PAGES_ENV`] keeps them.
///
/// Why: mimalloc asks for huge pages on its large regions, and on the virtual machines
/// measured a huge page's first touch (zeroing 2 MiB the host must provide as well) cost
/// more than all the TLB misses it saves: 13 % of a one-worker `statefun bench` at 1 M keys
/// was the kernel zeroing the growing state table's huge pages. Without them the in-memory
/// engine ran 12 % (one worker) and 30 % (two) faster at 1 M keys, the durable one 12 % at
/// 10 M keys, with a lower peak RSS (docs/BENCHMARKS.md). Set `MIMALLOC_ALLOW_THP=1` where
/// huge pages are cheap to fault in (bare metal, pre-faulted memory) to keep them.
pub fn huge_pages() {
    let keep = std::env::var(HUGE_PAGES_ENV).ok();
    if keeps_huge_pages(keep.as_deref()) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes nothing but
        // this process's huge page policy for future page faults.
        let failed = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
        if failed {
            tracing::debug!(
                "cannot switch transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Initializes logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the `statefun` command line with the given Rust functions.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let registry = statefun_engine::FunctionRegistry::new();
///     // registry.register(...) your functions here
///     statefun_engine::run_from_args(registry)
/// }
/// ```
pub fn run_from_args(registry: FunctionRegistry) -> ExitCode {
    run_cli(registry, std::env::args_os())
}

/// Like [`run_from_args`], with explicit arguments (the first is the program name).
pub fn run_cli<I, T>(registry: FunctionRegistry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    huge_pages();
    match cli.command {
        Command::Run(args) => run(registry, *args),
        Command::Validate { module, verbose } => validate(&registry, &module, verbose),
        Command::Describe { module } => validate(&registry, &module, true),
        Command::Bench(args) => match crate::bench::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Kafka {
            command: KafkaCommand::Lag { module, state_dir },
        } => print_report(kafka_lag(&module, &state_dir)),
        Command::Checkpoints { state_dirs } => {
            print_report(crate::checkpoint::describe_dirs(&state_dirs))
        }
        Command::Top(args) => crate::top::run(&args),
    }
}

/// Prints a report (exit 0) or its error (exit 1).
fn print_report(report: Result<String, String>) -> ExitCode {
    match report {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(paths: &[PathBuf]) -> Result<statefun_module::Module, ExitCode> {
    match statefun_module::load_files(paths) {
        Ok(module) => {
            for warning in &module.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(module)
        }
        Err(diagnostics) => {
            let errors = diagnostics
                .0
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            for d in &diagnostics.0 {
                let label = match d.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                eprintln!("{label}: {d}");
            }
            let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            eprintln!("{}: {errors} error(s); nothing was run", paths.join(", "));
            Err(ExitCode::FAILURE)
        }
    }
}

fn validate(registry: &FunctionRegistry, paths: &[PathBuf], verbose: bool) -> ExitCode {
    let module = match load(paths) {
        Ok(m) => m,
        Err(code) => return code,
    };
    print!("{}", module.summary());
    if verbose {
        print!("{}", module.routing_table());
    }
    // This binary may not be the one that will run the module (the stock `statefun` has
    // none of an app's Rust functions): a target only Rust could serve is a warning; one
    // nothing can serve, whatever is registered, is an error.
    let rust: Vec<statefun_sdk::TypeName> =
        registry.iter().map(|s| s.function_type.clone()).collect();
    let mut target_errors = 0;
    for (d, problem) in module.check_targets(&rust) {
        if problem.is_definite() {
            target_errors += 1;
            eprintln!("error: {d}");
        } else {
            eprintln!("warning: {d}");
        }
    }
    let (errors, notes) = crate::app::check_kafka_properties(&module);
    for note in notes {
        eprintln!("warning: {note}");
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if target_errors > 0 || !errors.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The `statefun kafka lag` report of every Kafka ingress of the module at `paths`.
fn kafka_lag(paths: &[PathBuf], state_dirs: &[PathBuf]) -> Result<String, String> {
    use statefun_connectors::kafka::{decode_kafka_positions, KafkaSource, PositionFrom};
    use std::fmt::Write;
    let module = statefun_module::load_files(paths).map_err(|d| d.to_string())?;
    let resume = match state_dirs {
        [] => None,
        dirs => crate::checkpoint::resume_positions(dirs)?,
    };
    let dirs = state_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    let mut any = false;
    for ingress in &module.ingresses {
        let statefun_module::IngressSpec::Kafka(spec) = &ingress.spec else {
            continue;
        };
        any = true;
        let properties = statefun_connectors::kafka::client_properties(
            &spec.properties,
            spec.properties_file.as_deref(),
        )
        .map_err(|e| format!("{}: `{}`: {}", ingress.file, ingress.id, e.join("; ")))?
        .properties;
        let spec = statefun_module::KafkaIngress {
            properties,
            properties_file: None,
            ..spec.clone()
        };
        let id = ingress.id.to_string();
        let mut checkpointed = Vec::new();
        if let Some(r) = &resume {
            for (_, bytes) in r.positions.iter().filter(|(i, _)| *i == id) {
                checkpointed.extend(decode_kafka_positions(&id, bytes).map_err(|e| e.to_string())?);
            }
        }
        let rows =
            KafkaSource::lag(&ingress.id, &spec, &checkpointed).map_err(|e| e.to_string())?;
        let source = match (&resume, state_dirs.is_empty()) {
            (Some(r), false) => format!("checkpoint {} of {dirs}", r.checkpoint),
            (None, false) => format!("no complete checkpoint in {dirs}; consumer group offsets"),
            (_, true) => "consumer group offsets".to_string(),
        };
        let _ = writeln!(
            out,
            "ingress {id} (group {}; positions: {source})",
            spec.consumer_group_id
        );
        let width = rows.iter().map(|r| r.topic.len()).max().unwrap_or(5).max(5);
        let _ = writeln!(
            out,
            "  {:<width$}  {:>9}  {:>12}  {:<10}  {:>14}  {:>10}",
            "TOPIC", "PARTITION", "POSITION", "FROM", "HIGH WATERMARK", "LAG"
        );
        let mut total = 0i64;
        for r in &rows {
            let from = match r.from {
                PositionFrom::Checkpoint => "checkpoint",
                PositionFrom::GroupOffset => "group",
                PositionFrom::Unknown => "-",
            };
            let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            total += r.lag.unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<width$}  {:>9}  {:>12}  {:<10}  {:>14}  {:>10}",
                r.topic,
                r.partition,
                show(r.position),
                from,
                r.high_watermark,
                show(r.lag)
            );
        }
        let _ = writeln!(out, "  total lag: {total}");
    }
    if !any {
        return Err(match module.files.len() {
            1 => format!("{} declares no Kafka ingress", module.file),
            _ => format!("none of {} declares a Kafka ingress", module.file),
        });
    }
    Ok(out)
}

/// Stops the process with an error if its workers have not started (timely
/// connected to every other process) within `limit`.
fn watch_connecting(shared: Arc<Shared>, cluster: &ClusterConfig, limit: Duration) {
    let (process, processes) = (cluster.process, cluster.processes);
    let hosts = match (&cluster.hostfile, &cluster.hosts) {
        (Some(h), _) => h.display().to_string(),
        (None, Some(pattern)) => pattern.clone(),
        (None, None) => "localhost:2101 and up".to_string(),
    };
    let spawned = std::thread::Builder::new()
        .name("statefun-connect-watch".into())
        .spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            while std::time::Instant::now() < deadline {
                if shared.started() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !shared.started() {
                eprintln!(
                    "error: process {process} could not connect to all {processes} processes of the \
                     job within {limit:?} (hosts: {hosts}): start every process with the same -n and \
                     host list, check their ports are reachable, or raise --connect-timeout"
                );
                std::process::exit(1);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch connecting to the other processes: {e}");
    }
}

/// Turns a lost peer process into one error line and exit code 1.
///
/// When another process of the job dies (SIGKILL, a crash, its machine going
/// away), timely's communication threads panic ("timely communication error:
/// reading data: socket closed") and every worker thread after them
/// ("MergeQueue poisoned"): pages of stack traces, and no word of what to do.
/// The job cannot go on without that process, so this process stops at once,
/// as a crash would: durable state and sinks are built for exactly that
/// (docs/DURABILITY.md), and a restart of every process resumes from the last
/// checkpoint every worker wrote.
///
/// With `--restart`, the error line is printed once and the run fails
/// (its workers stop with the panic) so that the restart loop takes over.
fn install_lost_peer_hook(process: usize, restarting: bool) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if [
            "timely communication error",
            "MergeQueue poisoned",
            "Send thread panic",
            "Recv thread panic",
        ]
        .iter()
        .any(|m| message.contains(m))
        {
            if !REPORTED.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "error: process {process} lost its connection to another process of the job ({message}); \
                     every process of the job stops: restart all of them, and they resume from the last \
                     checkpoint every worker wrote"
                );
            }
            if !restarting {
                std::process::exit(1);
            }
            return;
        }
        default(info);
    }));
}

fn run(registry: FunctionRegistry, args: RunArgs) -> ExitCode {
    let file = match &args.config {
        Some(path) => match crate::config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => crate::config::RunConfig::default(),
    };
    let state_dir = args.state_dir.clone().or(file.state_dir);
    let state_backend = args.state_backend.clone().or(file.state_backend);
    let checkpoint_interval = args
        .checkpoint_interval
        .or(file.checkpoint_interval)
        .unwrap_or(Duration::from_secs(1));
    use crate::checkpoint::StateMemory;
    let memory = StateMemory::from_mb(
        args.block_cache_mb
            .or(file.block_cache_mb)
            .unwrap_or(StateMemory::DEFAULT_BLOCK_CACHE_MB),
        args.write_buffer_mb
            .or(file.write_buffer_mb)
            .unwrap_or(StateMemory::DEFAULT_WRITE_BUFFER_MB),
        args.state_cache_mb
            .or(file.state_cache_mb)
            .unwrap_or(StateMemory::DEFAULT_STATE_CACHE_MB),
    );
    let durability = match (state_backend.as_deref(), &state_dir) {
        (Some("memory"), Some(dir)) => {
            eprintln!(
                "error: --state-backend memory contradicts --state-dir {}: drop one of them",
                dir.display()
            );
            return ExitCode::from(2);
        }
        (Some("memory"), None) | (None, None) => None,
        (_, dir) => Some(crate::app::Durability {
            state_dir: dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./statefun-state")),
            checkpoint_interval,
            memory,
        }),
    };
    let cluster = match args.timely.cluster() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions {
        settings: Settings {
            epoch_interval: Duration::from_millis(args.epoch_ms.max(1)),
            hop_cap: args.hop_cap.max(1),
            remote_failure: args.on_remote_failure.clone(),
            function_error: args.on_function_error.clone(),
            durability,
            fail_on_bad_records: args.on_bad_record == "fail",
            ..Settings::default()
        },
        cluster,
        backends: dataflow::memory_backend(),
        log_interval: Duration::from_secs_f64(args.log_interval.max(0.1)),
    };
    if options.cluster.processes > 1 {
        install_lost_peer_hook(
            options.cluster.process,
            args.restart != RestartPolicy::Never,
        );
    }
    let current = Arc::new(Mutex::new(Arc::new(Shared::default())));
    // Up before the job forms and across restarts: probes see it start.
    let _metrics = match args.metrics_addr.clone().or(file.metrics_addr) {
        Some(addr) => {
            let info = crate::observe::ProcessInfo {
                process: options.cluster.process,
                epoch_interval: options.settings.epoch_interval,
            };
            match crate::observe::serve(&addr, current.clone(), info) {
                Ok(server) => Some(server),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let signalled = match install_signal_handlers(&current) {
        Ok(flag) => flag,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failures_in_a_row = 0u32;
    loop {
        let shared = current.lock().map(|s| s.clone()).unwrap_or_default();
        if options.cluster.processes > 1 {
            watch_connecting(shared.clone(), &options.cluster, args.connect_timeout);
        }
        let started = std::time::Instant::now();
        let error = match run_module(&args.module, &registry, &options, shared) {
            Ok(_) => return ExitCode::SUCCESS,
            Err(e @ RunError::Startup(_)) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            Err(e) => e,
        };
        if args.restart.resets_after(started.elapsed()) {
            failures_in_a_row = 0;
        }
        failures_in_a_row += 1;
        let wait = args.restart.backoff(failures_in_a_row);
        let Some(wait) = wait.filter(|_| !signalled.load(Ordering::Relaxed)) else {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        };
        tracing::error!(
            restart = failures_in_a_row,
            backoff_ms = wait.as_millis() as u64,
            "the job failed ({error}); restarting from the last checkpoint"
        );
        std::thread::sleep(wait);
        if signalled.load(Ordering::Relaxed) {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
        if let Ok(mut slot) = current.lock() {
            *slot = Arc::new(Shared::default());
        }
    }
}

/// `<egress id>[:<topic or stream>]` of a `dead-letter=` policy.
fn parse_dead_letter(target: &str) -> Result<(TypeName, Option<String>), String> {
    let (egress, destination) = match target.split_once(':') {
        Some((egress, d)) if !d.is_empty() => (egress, Some(d.to_owned())),
        Some((egress, _)) => (egress, None),
        None => (target, None),
    };
    TypeName::parse(egress)
        .map(|egress| (egress, destination))
        .map_err(|e| format!("dead-letter egress: {e}"))
}

fn parse_remote_failure(text: &str) -> Result<RemoteFailurePolicy, String> {
    match text.split_once('=') {
        None if text == "fail" => Ok(RemoteFailurePolicy::FailJob),
        Some(("dead-letter", target)) => {
            parse_dead_letter(target).map(|(egress, destination)| RemoteFailurePolicy::DeadLetter {
                egress,
                destination,
            })
        }
        _ => Err(format!(
            "`{text}` is not a policy: use `fail` or `dead-letter=<egress id>[:<topic or stream>]`"
        )),
    }
}

fn parse_function_error(text: &str) -> Result<FunctionErrorPolicy, String> {
    match text.split_once('=') {
        None if text == "fail" => Ok(FunctionErrorPolicy::Fail),
        None if text == "skip" => Ok(FunctionErrorPolicy::Skip),
        Some(("dead-letter", target)) => {
            parse_dead_letter(target).map(|(egress, destination)| FunctionErrorPolicy::DeadLetter {
                egress,
                destination,
            })
        }
        _ => Err(format!(
            "`{text}` is not a policy: use `fail`, `skip` or `dead-letter=<egress id>[:<topic or stream>]`"
        )),
    }
}

/// SIGINT/SIGTERM ask sources to stop; the dataflow then drains and the
/// process exits 0. A second signal exits at once with status 130.
///
/// The signal goes to the run in `current` (the one running now, across
/// `--restart`s); the returned flag says a signal came (no more restarts).
fn install_signal_handlers(current: &Arc<Mutex<Arc<Shared>>>) -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    let current = current.clone();
    let seen = flag.clone();
    std::thread::Builder::new()
        .name("statefun-signals".into())
        .spawn(move || loop {
            if seen.load(Ordering::Relaxed) {
                tracing::info!("shutdown requested: stopping ingresses and draining");
                if let Ok(shared) = current.lock() {
                    shared.request_shutdown();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        })?;
    Ok(flag)
}
