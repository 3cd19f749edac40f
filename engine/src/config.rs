//! `statefun run --config FILE`: run settings kept in a YAML file beside the
//! module, so a deployment does not depend on a long command line.
//!
//! ```yaml
//! state-dir: ./state           # relative to this file's directory
//! checkpoint-interval: 500ms   # Flink-style durations: 500ms, 1s, 2min
//! block-cache-mb: 256          # RocksDB block cache per worker
//! write-buffer-mb: 512         # RocksDB memtables per worker
//! state-cache-mb: 256          # the hot table of state values kept in memory per worker
//! state-backend: rocksdb       # or memory
//! metrics-addr: 0.0.0.0:9249   # /metrics, /healthz, /readyz
//! ```
//!
//! Flags given on the command line win over the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

/// The settings a config file can hold; `None` where it is silent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunConfig {
    /// `state-dir`, resolved against the file's directory.
    pub state_dir: Option<PathBuf>,
    /// `state-backend`: `memory` or `rocksdb`.
    pub state_backend: Option<String>,
    /// `checkpoint-interval`.
    pub checkpoint_interval: Option<Duration>,
    /// `block-cache-mb`.
    pub block_cache_mb: Option<usize>,
    /// `write-buffer-mb`.
    pub write_buffer_mb: Option<usize>,
    /// `state-cache-mb`.
    pub state_cache_mb: Option<usize>,
    /// `metrics-addr`: HOST:PORT of `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: Option<String>,
}

const KEYS: &[&str] = &[
    "state-dir",
    "state-backend",
    "checkpoint-interval",
    "block-cache-mb",
    "write-buffer-mb",
    "state-cache-mb",
    "metrics-addr",
];

/// Reads a config file; errors name the file and the field.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("statefun.yaml");
/// std::fs::write(&path, "checkpoint-interval: 250ms\nstate-dir: st\n").unwrap();
/// let c = statefun_engine::config::load(&path).unwrap();
/// assert_eq!(c.checkpoint_interval, Some(std::time::Duration::from_millis(250)));
/// assert_eq!(c.state_dir, Some(dir.path().join("st")));
/// std::fs::write(&path, "checkpoint-intervall: 1s\n").unwrap();
/// assert!(statefun_engine::config::load(&path).unwrap_err().contains("checkpoint-intervall"));
/// ```
pub fn load(path: &Path) -> Result<RunConfig, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {file}: {e}"))?;
    let docs =
        YamlLoader::load_from_str(&text).map_err(|e| format!("{file}: not valid YAML: {e}"))?;
    let mut config = RunConfig::default();
    let Some(doc) = docs.into_iter().next() else {
        return Ok(config);
    };
    let map = match doc {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(config),
        _ => {
            return Err(format!(
                "{file}: expected a mapping of settings ({})",
                KEYS.join(", ")
            ))
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(format!(
                "{file}: setting names are strings ({})",
                KEYS.join(", ")
            ));
        };
        let text = match &value {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Real(r) => r.clone(),
            _ => return Err(format!("{file}: `{key}` needs a value, e.g. `{key}: …`")),
        };
        match key {
            "state-dir" => {
                let p = PathBuf::from(&text);
                config.state_dir = Some(if p.is_absolute() { p } else { base.join(p) });
            }
            "state-backend" => match text.as_str() {
                "memory" | "rocksdb" => config.state_backend = Some(text),
                other => {
                    return Err(format!(
                        "{file}: `state-backend: {other}`: use `memory` or `rocksdb`"
                    ))
                }
            },
            "checkpoint-interval" => {
                let d = statefun_module::parse_duration(&text)
                    .map_err(|e| format!("{file}: `checkpoint-interval`: {e}"))?;
                if d.is_zero() {
                    return Err(format!(
                        "{file}: `checkpoint-interval` must be longer than 0"
                    ));
                }
                config.checkpoint_interval = Some(d);
            }
            key @ ("block-cache-mb" | "write-buffer-mb" | "state-cache-mb") => {
                let mb = text
                    .parse()
                    .map_err(|_| format!("{file}: `{key}: {text}` is not a whole number of MiB"))?;
                let field = match key {
                    "block-cache-mb" => &mut config.block_cache_mb,
                    "write-buffer-mb" => &mut config.write_buffer_mb,
                    _ => &mut config.state_cache_mb,
                };
                *field = Some(mb);
            }
            "metrics-addr" => config.metrics_addr = Some(text),
            other => {
                return Err(format!(
                    "{file}: unknown setting `{other}`; known settings: {}",
                    KEYS.join(", ")
                ))
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<RunConfig, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("statefun.yaml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        load(&path)
    }

    #[test]
    fn memory_settings_are_read_and_bad_ones_named() {
        let c = load_text("block-cache-mb: 32\nwrite-buffer-mb: 64\nstate-cache-mb: 16\n").unwrap();
        assert_eq!(
            (c.block_cache_mb, c.write_buffer_mb, c.state_cache_mb),
            (Some(32), Some(64), Some(16))
        );
        let err = load_text("write-buffer-mb: lots\n").unwrap_err();
        assert!(
            err.ends_with("`write-buffer-mb: lots` is not a whole number of MiB"),
            "{err}"
        );
        let err = load_text("state-cache-gb: 1\n").unwrap_err();
        assert!(err.contains("unknown setting `state-cache-gb`"), "{err}");
        assert!(err.contains("state-cache-mb"), "{err}");
    }
}
