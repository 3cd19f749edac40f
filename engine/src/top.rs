//! `statefun top HOST:PORT…`: a terminal view of a running job, refreshed every second,
//! from the `/metrics` endpoints (`--metrics-addr`) of its processes.
//!
//! It shows, summed over the processes given: records per second in and out per ingress
//! and egress (with the Kafka lag of each ingress, and the delivery p99 of each egress), invocations per second per function
//! type with latency percentiles, remote endpoints (requests per second, in flight,
//! retries, latency percentiles), every Kafka partition's position, high watermark and lag,
//! and per process its readiness, epoch lag and last checkpoint.
//!
//! Why it works the way it does:
//!
//! * **Only the text exposition format.** `top` reads what Prometheus reads, with a small
//!   parser of its own ([`parse`]) and a plain HTTP/1.1 GET over a TCP stream, so it needs
//!   no client library and works against any process of any version that serves the
//!   metric names of docs/OBSERVABILITY.md.
//! * **Rates and percentiles over the last interval.** Counters are differenced between two
//!   scrapes; percentiles come from the histogram buckets' growth in the interval with
//!   Prometheus's `histogram_quantile` interpolation ([`quantile`]), or from everything
//!   since start when nothing was observed in it. `--once` scrapes twice, an interval
//!   apart, so that its one snapshot has rates too.
//! * **A process that does not answer is shown as down** (with the reason) and the others
//!   go on; a process that comes back is picked up at the next refresh.
//! * **Plain ANSI.** On a terminal every refresh clears the screen and redraws the tables;
//!   elsewhere (a pipe, a file) snapshots are printed one after another without escape
//!   codes. Ctrl-C (or SIGTERM) ends it with status 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `statefun top`'s command line.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The `--metrics-addr` of every process to watch: HOST:PORT, or a URL
    /// (http://HOST:PORT[/PATH], default path /metrics)
    #[arg(required = true, value_name = "HOST:PORT")]
    pub endpoints: Vec<String>,
    /// Print one snapshot and exit (two scrapes --interval apart, for the rates): for
    /// scripts and pipes. Exits 1 if no endpoint answered
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
}

/// How long one scrape may take (connecting, sending, reading the answer).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest `/metrics` answer read (a job has a few thousand series at most).
const MAX_BODY: u64 = 64 << 20;

/// Runs `statefun top` until Ctrl-C, or once with `--once`.
pub fn run(args: &TopArgs) -> ExitCode {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        eprintln!(
            "error: --interval {}: give a positive number of seconds, e.g. 1 or 0.5",
            args.interval
        );
        return ExitCode::from(2);
    }
    let interval = Duration::from_secs_f64(args.interval);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("error: cannot handle signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let terminal = !args.once && std::io::stdout().is_terminal();
    let mut previous = scrape_all(&args.endpoints);
    let mut previous_at = Instant::now();
    loop {
        if !sleep_unless(&stop, interval) {
            return ExitCode::SUCCESS;
        }
        let now = scrape_all(&args.endpoints);
        let now_at = Instant::now();
        let view = View::between(
            &previous,
            &now,
            now_at.duration_since(previous_at).as_secs_f64(),
        );
        let mut text = String::new();
        if terminal {
            // Home, clear the screen, then the tables.
            text.push_str("\x1b[H\x1b[2J");
        }
        text.push_str(&view.render(&args.endpoints, interval, !args.once));
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (a closed pipe): nothing left to show.
            return ExitCode::SUCCESS;
        }
        if args.once {
            let any_up = now.iter().any(|s| s.result.is_ok());
            return if any_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        if !terminal {
            let _ = writeln!(stdout);
        }
        previous = now;
        previous_at = now_at;
    }
}

/// Sleeps `how_long` in short slices; false if a signal asked to stop meanwhile.
fn sleep_unless(stop: &AtomicBool, how_long: Duration) -> bool {
    let until = Instant::now() + how_long;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// One endpoint's answer: its samples, or why it is down.
#[derive(Clone, Debug)]
struct Scrape {
    result: Result<Vec<Sample>, String>,
}

/// Scrapes every endpoint at once (one thread each), so one that hangs costs at most
/// [`SCRAPE_TIMEOUT`], not that many times the endpoints.
fn scrape_all(endpoints: &[String]) -> Vec<Scrape> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|e| scope.spawn(move || scrape(e)))
            .collect();
        handles
            .into_iter()
            .map(|h| Scrape {
                result: h
                    .join()
                    .unwrap_or_else(|_| Err("the scrape failed".to_string())),
            })
            .collect()
    })
}

fn scrape(endpoint: &str) -> Result<Vec<Sample>, String> {
    let (authority, path) = split_endpoint(endpoint);
    match http_get(authority, path, SCRAPE_TIMEOUT)? {
        (200, body) => Ok(parse(&body)),
        (status, body) => Err(format!(
            "HTTP {status}: {}",
            body.lines().next().unwrap_or("").trim()
        )),
    }
}

/// `host:port` and the path of an endpoint given as `host:port`, `http://host:port` or
/// `http://host:port/path`.
fn split_endpoint(endpoint: &str) -> (&str, &str) {
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    match rest.find('/') {
        Some(slash) if slash + 1 < rest.len() => (&rest[..slash], &rest[slash..]),
        Some(slash) => (&rest[..slash], "/metrics"),
        None => (rest, "/metrics"),
    }
}

/// A minimal HTTP/1.1 GET (`Connection: close`): the status and the body (de-chunked).
pub(crate) fn http_get(
    authority: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` answer (as far as it is well-formed).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or("").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            if let Some(part) = rest.get(..n.min(rest.len())) {
                out.push_str(part);
            }
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(""));
        body = rest.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    out
}

/// One sample of the text exposition format: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name as exposed (with `_total`, `_bucket`, … suffixes).
    pub name: String,
    /// The labels, in the order given.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus / OpenMetrics text exposition format: every well-formed sample
/// line, in order. Comments (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`), blank lines and
/// malformed lines are skipped, so one odd line never hides the rest; timestamps and
/// exemplars are ignored.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim_start();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    // The value, then perhaps a timestamp and an exemplar (`# {…} v`): only the value counts.
    let value = rest.split_whitespace().next()?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Parses `key="value",…}` (after the `{`): the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(tail) = s.strip_prefix('}') {
            return Some((labels, tail));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(tail) = s.strip_prefix(',') {
            s = tail;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a histogram given as `(upper bound, cumulative count)`
/// buckets in ascending order, the last one `+Inf` — Prometheus's `histogram_quantile`:
/// linear interpolation inside the bucket the rank falls in (the first bucket starts at 0),
/// and the highest finite bound when it falls in `+Inf`. `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || total.is_nan() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let i = buckets.iter().position(|(_, c)| *c >= rank)?;
    let (upper, count) = buckets[i];
    if upper.is_infinite() {
        return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
    }
    let (lower, below) = if i == 0 {
        (0.0f64.min(upper), 0.0)
    } else {
        buckets[i - 1]
    };
    let inside = count - below;
    if inside <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / inside)
}

/// Cumulative bucket counts by upper bound (its bits: bounds are non-negative, where the
/// bits order as the values do, `+Inf` last).
type Buckets = BTreeMap<u64, f64>;

/// A Kafka partition row: `(ingress, topic, partition, worker)`.
type PartitionKey = (String, String, i64, i64);

/// A Kafka partition's `(position, high watermark, lag)`, as far as reported.
type PartitionValues = (Option<f64>, Option<f64>, Option<f64>);

/// Everything `top` shows, summed over the processes of one scrape round.
#[derive(Clone, Debug, Default)]
struct Totals {
    ingress: BTreeMap<String, f64>,
    ingress_lag: BTreeMap<String, f64>,
    /// Per ingress, the Kinesis shard reader furthest behind its shard's tip (seconds).
    ingress_behind: BTreeMap<String, f64>,
    egress: BTreeMap<String, f64>,
    /// Per egress, the delivery latency histogram (epoch end to the sink's confirmation).
    delivery: BTreeMap<String, Buckets>,
    invocations: BTreeMap<String, f64>,
    failures: BTreeMap<String, f64>,
    latency: BTreeMap<String, Buckets>,
    remote_requests: BTreeMap<String, f64>,
    remote_in_flight: BTreeMap<String, f64>,
    remote_retries: BTreeMap<String, f64>,
    remote_latency: BTreeMap<String, Buckets>,
    partitions: BTreeMap<PartitionKey, PartitionValues>,
}

/// One process as the tables show it.
#[derive(Clone, Debug, Default)]
struct ProcessRow {
    process: Option<String>,
    down: Option<String>,
    ready: Option<bool>,
    epoch_lag: Option<f64>,
    checkpoint_age: Option<f64>,
    checkpoint_write: Option<f64>,
}

impl Totals {
    fn add(&mut self, samples: &[Sample]) -> ProcessRow {
        let mut row = ProcessRow::default();
        let add = |map: &mut BTreeMap<String, f64>, key: Option<&str>, v: f64| {
            if let Some(k) = key {
                *map.entry(k.to_string()).or_default() += v;
            }
        };
        let bucket = |map: &mut BTreeMap<String, Buckets>, key: Option<&str>, s: &Sample| {
            let le = s.label("le").and_then(parse_value);
            if let (Some(k), Some(le)) = (key, le) {
                if le >= 0.0 {
                    *map.entry(k.to_string())
                        .or_default()
                        .entry(le.to_bits())
                        .or_default() += s.value;
                }
            }
        };
        for s in samples {
            let v = s.value;
            match s.name.as_str() {
                "statefun_ready" => row.ready = Some(v >= 1.0),
                "statefun_epoch_lag_seconds" => row.epoch_lag = Some(v),
                "statefun_checkpoint_age_seconds" => row.checkpoint_age = Some(v),
                "statefun_checkpoint_last_write_seconds" => row.checkpoint_write = Some(v),
                "statefun_ingress_records_total" => add(&mut self.ingress, s.label("ingress"), v),
                "statefun_egress_records_total" => add(&mut self.egress, s.label("egress"), v),
                "statefun_egress_delivery_seconds_bucket" => {
                    bucket(&mut self.delivery, s.label("egress"), s)
                }
                "statefun_function_invocations_total" => {
                    add(&mut self.invocations, s.label("function"), v)
                }
                "statefun_function_invocation_failures_total" => {
                    add(&mut self.failures, s.label("function"), v)
                }
                "statefun_function_invocation_seconds_bucket" => {
                    bucket(&mut self.latency, s.label("function"), s)
                }
                "statefun_remote_requests_total" => {
                    add(&mut self.remote_requests, s.label("endpoint"), v)
                }
                "statefun_remote_in_flight_requests" => {
                    add(&mut self.remote_in_flight, s.label("endpoint"), v)
                }
                "statefun_remote_retries_total" => {
                    add(&mut self.remote_retries, s.label("endpoint"), v)
                }
                "statefun_remote_request_seconds_bucket" => {
                    bucket(&mut self.remote_latency, s.label("endpoint"), s)
                }
                "statefun_kinesis_shard_behind_latest_seconds" => {
                    if let Some(ingress) = s.label("ingress") {
                        let worst = self.ingress_behind.entry(ingress.to_string()).or_default();
                        *worst = worst.max(v);
                    }
                }
                "statefun_kafka_partition_position"
                | "statefun_kafka_partition_high_watermark"
                | "statefun_kafka_partition_lag_records" => {
                    let key = (
                        s.label("ingress").unwrap_or("").to_string(),
                        s.label("topic").unwrap_or("").to_string(),
                        s.label("partition")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(-1),
                        s.label("worker").and_then(|w| w.parse().ok()).unwrap_or(-1),
                    );
                    let entry = self.partitions.entry(key).or_default();
                    match s.name.as_str() {
                        "statefun_kafka_partition_position" => entry.0 = Some(v),
                        "statefun_kafka_partition_high_watermark" => entry.1 = Some(v),
                        _ => {
                            entry.2 = Some(v);
                            add(&mut self.ingress_lag, s.label("ingress"), v);
                        }
                    }
                }
                _ => {}
            }
            if row.process.is_none() {
                row.process = s.label("process").map(str::to_string);
            }
        }
        row
    }
}

/// What one refresh shows: the newest totals, rates since the previous scrape round, and
/// per process its state.
#[derive(Debug, Default)]
struct View {
    totals: Totals,
    previous: Totals,
    seconds: f64,
    processes: Vec<ProcessRow>,
}

impl View {
    fn between(previous: &[Scrape], now: &[Scrape], seconds: f64) -> View {
        let mut before = Totals::default();
        for s in previous {
            if let Ok(samples) = &s.result {
                before.add(samples);
            }
        }
        let mut totals = Totals::default();
        let processes = now
            .iter()
            .map(|s| match &s.result {
                Ok(samples) => totals.add(samples),
                Err(e) => ProcessRow {
                    down: Some(e.clone()),
                    ..ProcessRow::default()
                },
            })
            .collect();
        View {
            totals,
            previous: before,
            seconds,
            processes,
        }
    }

    /// Growth per second of `key` in a counter map (0 after a restart reset it).
    fn rate(&self, pick: fn(&Totals) -> &BTreeMap<String, f64>, key: &str) -> Option<f64> {
        let now = pick(&self.totals).get(key)?;
        let before = pick(&self.previous).get(key)?;
        (self.seconds > 0.0).then(|| (now - before).max(0.0) / self.seconds)
    }

    /// Percentiles (`qs`) of histogram `key`: over the interval if it observed anything,
    /// else since start.
    fn percentiles(
        &self,
        pick: fn(&Totals) -> &BTreeMap<String, Buckets>,
        key: &str,
        qs: &[f64],
    ) -> Vec<Option<f64>> {
        let Some(now) = pick(&self.totals).get(key) else {
            return vec![None; qs.len()];
        };
        let as_list = |b: &Buckets| -> Vec<(f64, f64)> {
            b.iter().map(|(le, c)| (f64::from_bits(*le), *c)).collect()
        };
        let mut window = as_list(now);
        if let Some(before) = pick(&self.previous).get(key) {
            let delta: Vec<(f64, f64)> = now
                .iter()
                .map(|(le, c)| {
                    (
                        f64::from_bits(*le),
                        (c - before.get(le).copied().unwrap_or(0.0)).max(0.0),
                    )
                })
                .collect();
            if delta.last().is_some_and(|(_, c)| *c > 0.0) {
                window = delta;
            }
        }
        qs.iter().map(|q| quantile(*q, &window)).collect()
    }

    /// The tables as text.
    fn render(&self, endpoints: &[String], interval: Duration, live: bool) -> String {
        let mut out = String::new();
        let up = self.processes.iter().filter(|p| p.down.is_none()).count();
        let _ = writeln!(
            out,
            "statefun top: {up} of {} endpoint(s) up, rates over {:.1}s{}\n",
            endpoints.len(),
            self.seconds.max(interval.as_secs_f64()),
            if live {
                format!(", every {:.1}s (Ctrl-C quits)", interval.as_secs_f64())
            } else {
                String::new()
            }
        );
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map_or("-".to_string(), f);
        let mut rows = Vec::new();
        for (endpoint, p) in endpoints.iter().zip(&self.processes) {
            match &p.down {
                Some(why) => {
                    let mut row = vec![endpoint.clone(), "-".into(), "down".into()];
                    row.extend(std::iter::repeat_n("-".to_string(), 4));
                    row.push(why.clone());
                    rows.push(row);
                }
                None => rows.push(vec![
                    endpoint.clone(),
                    p.process.clone().unwrap_or_else(|| "-".into()),
                    "up".into(),
                    match p.ready {
                        Some(true) => "ready".into(),
                        Some(false) => "not ready".into(),
                        None => "-".into(),
                    },
                    opt(p.epoch_lag, seconds),
                    opt(p.checkpoint_age, seconds),
                    opt(p.checkpoint_write, seconds),
                ]),
            }
        }
        table(
            &mut out,
            &[
                "ENDPOINT",
                "PROCESS",
                "STATUS",
                "READY",
                "EPOCH LAG",
                "CHECKPOINT AGE",
                "LAST CHECKPOINT",
            ],
            rows,
        );
        let t = &self.totals;
        let rows = t
            .ingress
            .iter()
            .map(|(id, total)| {
                vec![
                    id.clone(),
                    opt(self.rate(|t| &t.ingress, id), rate),
                    count(*total),
                    opt(t.ingress_lag.get(id).copied(), count),
                    opt(t.ingress_behind.get(id).copied(), seconds),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "INGRESS",
                "RECORDS/S",
                "TOTAL",
                "KAFKA LAG",
                "KINESIS BEHIND",
            ],
            rows,
        );
        let rows = t
            .egress
            .iter()
            .map(|(id, total)| {
                let p = self.percentiles(|t| &t.delivery, id, &[0.99]);
                vec![
                    id.clone(),
                    opt(self.rate(|t| &t.egress, id), rate),
                    count(*total),
                    opt(p[0], seconds),
                ]
            })
            .collect();
        table(
            &mut out,
            &["EGRESS", "RECORDS/S", "TOTAL", "DELIVERY P99"],
            rows,
        );
        let rows = t
            .invocations
            .iter()
            .map(|(f, total)| {
                let p = self.percentiles(|t| &t.latency, f, &[0.5, 0.99]);
                vec![
                    f.clone(),
                    opt(self.rate(|t| &t.invocations, f), rate),
                    count(*total),
                    opt(t.failures.get(f).copied(), count),
                    opt(p[0], seconds),
                    opt(p[1], seconds),
                ]
            })
            .collect();
        table(
            &mut out,
            &["FUNCTION", "INVOCATIONS/S", "TOTAL", "FAILED", "P50", "P99"],
            rows,
        );
        let rows = t
            .remote_requests
            .iter()
            .map(|(e, total)| {
                let p = self.percentiles(|t| &t.remote_latency, e, &[0.5, 0.9, 0.99]);
                vec![
                    e.clone(),
                    opt(self.rate(|t| &t.remote_requests, e), rate),
                    count(*total),
                    opt(t.remote_in_flight.get(e).copied(), count),
                    opt(t.remote_retries.get(e).copied(), count),
                    opt(p[0], seconds),
                    opt(p[1], seconds),
                    opt(p[2], seconds),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "REMOTE ENDPOINT",
                "REQUESTS/S",
                "TOTAL",
                "IN FLIGHT",
                "RETRIES",
                "P50",
                "P90",
                "P99",
            ],
            rows,
        );
        let rows = t
            .partitions
            .iter()
            .map(|((ingress, topic, partition, worker), (pos, high, lag))| {
                vec![
                    ingress.clone(),
                    format!("{topic} [{partition}]"),
                    worker.to_string(),
                    opt(*pos, count),
                    opt(*high, count),
                    opt(*lag, count),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "KAFKA INGRESS",
                "PARTITION",
                "WORKER",
                "POSITION",
                "HIGH WATERMARK",
                "LAG",
            ],
            rows,
        );
        out
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn rate(v: f64) -> String {
    format!("{v:.1}")
}

fn seconds(v: f64) -> String {
    if v < 1e-3 {
        format!("{:.1}µs", v * 1e6)
    } else if v < 1.0 {
        format!("{:.1}ms", v * 1e3)
    } else {
        format!("{v:.2}s")
    }
}

/// Appends a table with aligned columns (a row may be shorter or longer than the header);
/// nothing when there are no rows.
fn table(out: &mut String, header: &[&str], rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        return;
    }
    let columns = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(header.len());
    let mut widths = vec![0; columns];
    let cells = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows)
        .collect::<Vec<_>>();
    for row in &cells {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{render, ProcessInfo};
    use crate::shared::{FunctionCounts, Metrics, Shared};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn parser_reads_labels_escapes_specials_and_skips_junk() {
        let text = "# HELP a_total An a.\n# TYPE a_total counter\n\
                    a_total{x=\"1\",y=\"q\\\"u\\\\o\\nte\"} 3\n\
                    b 4.5 1700000000\n\
                    c{le=\"+Inf\",} +Inf\n\
                    d{x=\"1\"} NaN # {trace=\"t\"} 1\n\
                    broken{x=\"1\" 2\n\
                    9starts_with_digit 1\n\
                    nospace{}7\n\
                    \n\
                    e{ a = \"spaced\" } -2e-3\r\n\
                    # EOF\n";
        let samples = parse(text);
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a_total", "b", "c", "d", "e"]);
        assert_eq!(samples[0].label("y"), Some("q\"u\\o\nte"));
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].value, 4.5);
        assert_eq!(samples[2].label("le"), Some("+Inf"));
        assert!(samples[2].value.is_infinite());
        assert!(samples[3].value.is_nan());
        assert_eq!(samples[4].label("a"), Some("spaced"));
        assert_eq!(samples[4].value, -2e-3);
    }

    #[test]
    fn quantiles_interpolate_like_histogram_quantile() {
        // 10 observations in (0, 1], 10 in (1, 2], none above.
        let b = [(1.0, 10.0), (2.0, 20.0), (f64::INFINITY, 20.0)];
        assert!(close(quantile(0.5, &b).unwrap(), 1.0));
        assert!(close(quantile(0.25, &b).unwrap(), 0.5));
        assert!(close(quantile(0.75, &b).unwrap(), 1.5));
        assert!(close(quantile(1.0, &b).unwrap(), 2.0));
        assert!(close(quantile(0.0, &b).unwrap(), 0.0));
        // A rank in +Inf gives the highest finite bound.
        let b = [(1.0, 1.0), (2.0, 2.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(0.9, &b), Some(2.0));
        // Empty buckets below the rank are skipped.
        let b = [(1.0, 0.0), (2.0, 0.0), (4.0, 4.0), (f64::INFINITY, 4.0)];
        assert!(close(quantile(0.5, &b).unwrap(), 3.0));
        assert_eq!(quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn parses_our_own_endpoint_and_rebuilds_the_tables() {
        let shared = Shared::default();
        shared.expect_workers(1);
        shared.worker_ready();
        let m = &shared.metrics;
        // Two workers' counts: the view sums them.
        Metrics::add(&m.ingress_counter("ns/in", 0).0, 40);
        Metrics::add(&m.ingress_counter("ns/in", 1).0, 2);
        m.count_egress(0, [("ns/out", 7, 70)]);
        // 100 epochs delivered in 0.5 to 1 s: the p99 interpolates inside that bucket.
        let mut delivery = crate::shared::Histogram::new(&crate::shared::DELIVERY_BOUNDS);
        delivery.observe_n(0.7, 100);
        m.observe_delivery("ns/out", 0, &delivery);
        let mut counts = FunctionCounts {
            invocations: 100,
            errors: 2,
            ..FunctionCounts::default()
        };
        // 50 invocations of 4 µs and 50 of 40 µs: p50 is the top of the 5 µs bucket.
        counts.latency.observe_n(4e-6, 50);
        counts.latency.observe_n(40e-6, 50);
        m.count_functions(0, [("ns/fn", &counts)]);
        let info = ProcessInfo {
            process: 2,
            epoch_interval: Duration::from_millis(10),
        };
        let text = render(&shared, info).unwrap();
        let samples = parse(&text);
        let count = samples
            .iter()
            .find(|s| {
                s.name == "statefun_function_invocation_seconds_count"
                    && s.label("function") == Some("ns/fn")
            })
            .map(|s| s.value);
        assert_eq!(count, Some(100.0), "{text}");
        let scrape = Scrape {
            result: Ok(samples),
        };
        let view = View::between(&[], &[scrape], 1.0);
        let p = view.percentiles(|t| &t.latency, "ns/fn", &[0.5, 0.99]);
        assert!(close(p[0].unwrap(), 5e-6), "{p:?}");
        // 99th: in (25 µs, 50 µs], 49 of its 50 observations in.
        assert!(close(p[1].unwrap(), 25e-6 + 25e-6 * 49.0 / 50.0), "{p:?}");
        let shown = view.render(&["here:1".to_string()], Duration::from_secs(1), false);
        for row in [
            "here:1    2        up      ready",
            "ns/in    -          42     -",
            "ns/out  -          7      995.0ms",
            "ns/fn     -              100    2       5.0µs  49.5µs",
        ] {
            assert!(shown.contains(row), "no `{row}` in:\n{shown}");
        }
    }

    #[test]
    fn rates_come_from_two_rounds_and_a_down_endpoint_is_shown() {
        let round = |n: f64| {
            Scrape {
            result: Ok(parse(&format!(
                "statefun_ingress_records_total{{process=\"0\",ingress=\"i\"}} {n}\n\
                 statefun_kafka_partition_lag_records{{process=\"0\",worker=\"1\",ingress=\"i\",topic=\"t\",partition=\"3\"}} 5\n"
            ))),
        }
        };
        let down = Scrape {
            result: Err("connection refused".into()),
        };
        let view = View::between(&[round(10.0), down.clone()], &[round(30.0), down], 2.0);
        assert_eq!(view.rate(|t| &t.ingress, "i"), Some(10.0));
        let shown = view.render(
            &["a:1".to_string(), "b:2".to_string()],
            Duration::from_secs(2),
            true,
        );
        for row in [
            "1 of 2 endpoint(s) up",
            "b:2       -        down    -      -          -               -                connection refused",
            "i        10.0       30     5",
            "i              t [3]      1       -         -               5",
        ] {
            assert!(shown.contains(row), "no `{row}` in:\n{shown}");
        }
    }

    #[test]
    fn endpoints_take_a_url_or_host_port() {
        assert_eq!(split_endpoint("h:1"), ("h:1", "/metrics"));
        assert_eq!(split_endpoint("http://h:1"), ("h:1", "/metrics"));
        assert_eq!(split_endpoint("http://h:1/"), ("h:1", "/metrics"));
        assert_eq!(split_endpoint("http://h:1/m"), ("h:1", "/m"));
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
