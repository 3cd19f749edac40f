//! Running a module.yaml: load, resolve against the registry, run.
//!
//! The CLI and tests share this path, so what tests exercise is what users run. An app may be
//! one module file or several files and directories loaded as one module
//! ([`statefun_module::load_files`]); [`ModulePaths`] lets every entry point take either.

use std::path::{Path, PathBuf};
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

/// The module files and directories of an app: one path (`&Path`, `&PathBuf`, `&str`) or
/// several (a slice, array or `Vec` of them), so that [`run_module`] takes both and callers
/// with one module.yaml need not change. Several paths, and directories (their `*.yaml` and
/// `*.yml` files, in name order), load as one module ([`statefun_module::load_files`]).
///
/// ```
/// use statefun_engine::runner::ModulePaths;
/// use std::path::{Path, PathBuf};
/// assert_eq!(Path::new("module.yaml").module_paths(), [Path::new("module.yaml")]);
/// let app = [PathBuf::from("functions.yaml"), PathBuf::from("io/")];
/// assert_eq!(app.module_paths(), [Path::new("functions.yaml"), Path::new("io/")]);
/// ```
pub trait ModulePaths {
    /// The paths, in order.
    fn module_paths(&self) -> Vec<&Path>;
}

impl ModulePaths for Path {
    fn module_paths(&self) -> Vec<&Path> {
        vec![self]
    }
}

impl ModulePaths for PathBuf {
    fn module_paths(&self) -> Vec<&Path> {
        vec![self.as_path()]
    }
}

impl ModulePaths for str {
    fn module_paths(&self) -> Vec<&Path> {
        vec![Path::new(self)]
    }
}

impl ModulePaths for String {
    fn module_paths(&self) -> Vec<&Path> {
        vec![Path::new(self)]
    }
}

impl<P: AsRef<Path>> ModulePaths for [P] {
    fn module_paths(&self) -> Vec<&Path> {
        self.iter().map(AsRef::as_ref).collect()
    }
}

impl<P: AsRef<Path>, const N: usize> ModulePaths for [P; N] {
    fn module_paths(&self) -> Vec<&Path> {
        self.iter().map(AsRef::as_ref).collect()
    }
}

impl<P: AsRef<Path>> ModulePaths for Vec<P> {
    fn module_paths(&self) -> Vec<&Path> {
        self.iter().map(AsRef::as_ref).collect()
    }
}

/// Loads the module at `paths` (one file, or several files and directories loaded as one
/// module) and resolves it against `registry`, with module warnings logged.
pub fn load_application<P: ModulePaths + ?Sized>(
    paths: &P,
    registry: &FunctionRegistry,
    settings: Settings,
) -> Result<Application, RunError> {
    let module = statefun_module::load_files(&paths.module_paths())
        .map_err(|d| RunError::Startup(d.0.iter().map(|d| d.to_string()).collect()))?;
    for warning in &module.warnings {
        tracing::warn!("{warning}");
    }
    Application::new(&module, registry, settings).map_err(RunError::Startup)
}

/// Runs the module at `paths` — one module file (`&path`), or several files and directories
/// loaded as one module (`&[a, b]`, see [`ModulePaths`]) — until its ingresses are exhausted
/// and all work is done, or until `shared` asks for shutdown.
pub fn run_module<P: ModulePaths + ?Sized>(
    paths: &P,
    registry: &FunctionRegistry,
    options: &RunOptions,
    shared: Arc<Shared>,
) -> Result<RunReport, RunError> {
    let app = load_application(paths, registry, options.settings.clone())?;
    dataflow::run(
        Arc::new(app),
        &options.cluster,
        shared,
        options.backends.clone(),
        options.log_interval,
    )
    .map_err(RunError::Failed)
}
