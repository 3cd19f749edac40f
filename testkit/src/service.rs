//! Restarting the services the `ci/` scripts start, for fault tests.
//!
//! A fault test that *restarts* a broker or emulator (rather than pausing it)
//! needs to start it again exactly as the script did: same command line,
//! environment, working directory and log. The script records only a pid, so
//! [`Service::of`] reads the rest from `/proc/<pid>` of the running process;
//! [`Service::stop`] and [`Service::start`] then take it down and bring it
//! back (Kafka keeps its data dir and ports, so clients reconnect to the same
//! broker). (The Kinesis emulator cannot be restarted this way without
//! losing its streams; see [`crate::proxy`].)

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A service process as it was started: enough to start it again.
#[derive(Clone, Debug)]
pub struct Service {
    /// The running process (the last one started).
    pub pid: u32,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    /// Where its stdout and stderr went (appended to on restart).
    log: Option<PathBuf>,
    /// The pid file the `ci/` script wrote, kept current on restart.
    pid_file: Option<PathBuf>,
}

/// `/proc/<pid>/<file>` split at NUL bytes.
fn nul_separated(pid: u32, file: &str) -> std::io::Result<Vec<OsString>> {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect())
}

/// Whether `pid` is a live process (not gone, not a zombie nobody reaped).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

impl Service {
    /// The service whose pid is in `pid_file` (as a `ci/` script wrote it).
    pub fn from_pid_file(pid_file: &Path) -> std::io::Result<Service> {
        let text = std::fs::read_to_string(pid_file)?;
        let pid = text.trim().parse().map_err(|_| {
            std::io::Error::other(format!("{} holds no pid: {text:?}", pid_file.display()))
        })?;
        let mut service = Service::of(pid)?;
        service.pid_file = Some(pid_file.to_path_buf());
        Ok(service)
    }

    /// The running process `pid`: its command line, environment, working
    /// directory and where its stdout goes.
    pub fn of(pid: u32) -> std::io::Result<Service> {
        let argv = nul_separated(pid, "cmdline")?;
        if argv.is_empty() {
            return Err(std::io::Error::other(format!(
                "process {pid} has no command line"
            )));
        }
        let env = nul_separated(pid, "environ")?
            .into_iter()
            .filter_map(|kv| {
                let bytes = kv.as_bytes();
                let eq = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    OsString::from_vec(bytes[..eq].to_vec()),
                    OsString::from_vec(bytes[eq + 1..].to_vec()),
                ))
            })
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
        let log = std::fs::read_link(format!("/proc/{pid}/fd/1"))
            .ok()
            .filter(|p| p.is_absolute() && p.is_file());
        Ok(Service {
            pid,
            argv,
            env,
            cwd,
            log,
            pid_file: None,
        })
    }

    /// SIGTERM (an orderly shutdown), SIGKILL after `grace`; returns once the
    /// process is gone.
    pub fn stop(&self, grace: Duration) {
        signal(self.pid, "-TERM");
        let deadline = Instant::now() + grace;
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(self.pid) {
            signal(self.pid, "-KILL");
            while alive(self.pid) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the service again as it was started before (in its own session,
    /// so it outlives the test), updates its pid file, and returns at once.
    pub fn start(&mut self) -> std::io::Result<()> {
        let pid = self.spawn()?;
        self.pid = pid;
        if let Some(f) = &self.pid_file {
            std::fs::write(f, format!("{pid}\n"))?;
        }
        Ok(())
    }

    fn spawn(&self) -> std::io::Result<u32> {
        let output = |log: &Option<PathBuf>| -> std::io::Result<Stdio> {
            Ok(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?
                    .into(),
                None => Stdio::null(),
            })
        };
        // `setsid` execs the command in a new session with the same pid.
        let child = Command::new("setsid")
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(output(&self.log)?)
            .stderr(output(&self.log)?)
            .spawn()?;
        Ok(child.id())
    }
}
