//! Running a module.yaml: load, resolve against the registry, run.
//!
//! The CLI and tests share this path, so what tests exercise is what users run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::app::{Application, Settings};
use crate::dataflow::{self, BackendFactory, ClusterConfig, RunReport};
use crate::registry::FunctionRegistry;
use crate::shared::Shared;

/// How to run a module.
#[derive(Clone)]
pub struct RunOptions {
    /// Runtime settings.
    pub settings: Settings,
    /// This process's place in the cluster.
    pub cluster: ClusterConfig,
    /// State backends, one per worker.
    pub backends: BackendFactory,
    /// Time between progress log lines.
    pub log_interval: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            settings: Settings::default(),
            cluster: ClusterConfig::default(),
            backends: dataflow::memory_backend(),
            log_interval: Duration::from_secs(5),
        }
    }
}

/// Why a run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The module or its resolution against the registry is invalid; nothing ran.
    Startup(Vec<String>),
    /// The run started and failed.
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Startup(errors) => {
                for e in errors {
                    writeln!(f, "error: {e}")?;
                }
                write!(f, "{} error(s); nothing was run", errors.len())
            }
            RunError::Failed(e) => write!(f, "error: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Loads and resolves `path` against `registry`, with module warnings logged.
pub fn load_application(
    path: &Path,
    registry: &FunctionRegistry,
    settings: Settings,
) -> Result<Application, RunError> {
    let module = statefun_module::load_file(path)
        .map_err(|d| RunError::Startup(d.0.iter().map(|d| d.to_string()).collect()))?;
    for warning in &module.warnings {
        tracing::warn!("{warning}");
    }
    Application::new(&module, registry, settings).map_err(RunError::Startup)
}

/// Runs the module at `path` until its ingresses are exhausted and all work is
/// done, or until `shared` asks for shutdown.
pub fn run_module(
    path: &Path,
    registry: &FunctionRegistry,
    options: &RunOptions,
    shared: Arc<Shared>,
) -> Result<RunReport, RunError> {
    let app = load_application(path, registry, options.settings.clone())?;
    dataflow::run(
        Arc::new(app),
        &options.cluster,
        shared,
        options.backends.clone(),
        options.log_interval,
    )
    .map_err(RunError::Failed)
}
