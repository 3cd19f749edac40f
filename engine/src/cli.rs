//! The `statefun` command line: `run`, `validate`, `describe`, `bench`.
//!
//! A user binary that registers Rust functions calls [`run_from_args`] with
//! its registry and gets the same command line as the stock `statefun`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};
use statefun_module::Severity;

use crate::app::{FunctionErrorPolicy, Settings};
use crate::dataflow::{self, ClusterConfig};
use crate::registry::FunctionRegistry;
use crate::remote::RemoteFailurePolicy;
use crate::runner::{run_module, RunOptions};
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
    /// Run the application described by a module.yaml.
    Run(RunArgs),
    /// Check a module.yaml and print a summary; exits 1 on errors.
    Validate {
        /// The module.yaml file.
        module: PathBuf,
        /// Also print the routing table.
        #[arg(long)]
        verbose: bool,
    },
    /// Print the routing table of a module.yaml.
    Describe {
        /// The module.yaml file.
        module: PathBuf,
    },
    /// Measure throughput: generator → keyed counter → discard, against a hand-written timely baseline.
    Bench(crate::bench::BenchArgs),
    /// List the checkpoints in a state directory (safe while a job runs).
    Checkpoints {
        /// The state directory (`--state-dir` of `run`).
        state_dir: PathBuf,
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
}

impl TimelyArgs {
    /// The cluster position these arguments describe.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The module.yaml file.
    module: PathBuf,
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
    /// A YAML file with run settings (`state-dir`, `state-backend`,
    /// `checkpoint-interval`, `block-cache-mb`); flags win over it.
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
    /// What an ingress record without a non-empty UTF-8 key (the function
    /// id) or without a value (a Kafka tombstone) does: `skip` (counted,
    /// logged) or `fail` (the job stops, naming the record). An ingress's
    /// `badRecords` in module.yaml wins (it can also dead-letter them).
    #[arg(long, default_value = "skip", value_parser = ["skip", "fail"])]
    on_bad_record: String,
    #[command(flatten)]
    timely: TimelyArgs,
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
    match cli.command {
        Command::Run(args) => run(registry, args),
        Command::Validate { module, verbose } => validate(&registry, &module, verbose),
        Command::Describe { module } => validate(&registry, &module, true),
        Command::Bench(args) => match crate::bench::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Checkpoints { state_dir } => match crate::checkpoint::describe_dir(&state_dir) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load(path: &std::path::Path) -> Result<statefun_module::Module, ExitCode> {
    match statefun_module::load_file(path) {
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
            eprintln!("{}: {errors} error(s); nothing was run", path.display());
            Err(ExitCode::FAILURE)
        }
    }
}

fn validate(registry: &FunctionRegistry, path: &std::path::Path, verbose: bool) -> ExitCode {
    let module = match load(path) {
        Ok(m) => m,
        Err(code) => return code,
    };
    print!("{}", module.summary());
    if verbose {
        print!("{}", module.routing_table());
    }
    for d in module.check_targets(&|t| registry.contains(t)) {
        eprintln!("warning: {d}");
    }
    ExitCode::SUCCESS
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
fn install_lost_peer_hook(process: usize) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if message.contains("timely communication error") || message.contains("MergeQueue poisoned")
        {
            eprintln!(
                "error: process {process} lost its connection to another process of the job ({message}); \
                 every process of the job stops: restart all of them, and they resume from the last \
                 checkpoint every worker wrote"
            );
            std::process::exit(1);
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
    let block_cache_mb = args.block_cache_mb.or(file.block_cache_mb).unwrap_or(64);
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
            block_cache_bytes: block_cache_mb.max(1) << 20,
        }),
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
        cluster: args.timely.cluster(),
        backends: dataflow::memory_backend(),
        log_interval: Duration::from_secs_f64(args.log_interval.max(0.1)),
    };
    if options.cluster.processes > 1 {
        install_lost_peer_hook(options.cluster.process);
    }
    let shared = Arc::new(Shared::default());
    if let Err(e) = install_signal_handlers(&shared) {
        eprintln!("error: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    match run_module(&args.module, &registry, &options, shared) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
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
fn install_signal_handlers(shared: &Arc<Shared>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("statefun-signals".into())
        .spawn(move || loop {
            if flag.load(Ordering::Relaxed) {
                tracing::info!("shutdown requested: stopping ingresses and draining");
                shared.request_shutdown();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        })?;
    Ok(())
}
