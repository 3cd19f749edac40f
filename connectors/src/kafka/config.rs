//! What the Kafka source and sink share: client configuration with runtime-owned keys,
//! the partition → worker hash, librdkafka logging through `tracing`, and reading back
//! the effective configuration of a live client.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::Mutex;

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use statefun_module::{is_secret_key, Properties};

use crate::hash::fnv1a;
use crate::ConnectorError;

/// The worker (of `peers`, counted over all processes) that reads `partition` of `topic`.
///
/// `(fnv1a64(topic) + partition) mod peers`: fixed and documented because every worker
/// computes it on its own and all must agree, and because checkpointed offsets are restored
/// by it. Adding the partition number (instead of hashing it) spreads the consecutive
/// partitions of one topic evenly over the workers.
pub fn partition_owner(topic: &str, partition: i32, peers: usize) -> usize {
    let h = fnv1a(topic.as_bytes());
    let peers = peers.max(1) as u64;
    // Partitions are never negative; `max(0)` keeps a bad value from wrapping around.
    (h.wrapping_add(u64::from(partition.max(0).unsigned_abs())) % peers) as usize
}

/// One key the runtime sets itself, whatever `properties` say.
pub(crate) struct Owned<'a> {
    pub key: &'a str,
    pub value: String,
    /// Why the runtime owns it, for the warning.
    pub why: &'a str,
}

/// Builds a client configuration: `defaults` first (a property overrides them), then the
/// user's `properties` unchanged, then the runtime-owned keys; every owned key that the user
/// set to a different value is named in a warning (secrets are never printed).
pub(crate) fn client_config(
    connector: &str,
    id: &str,
    defaults: &[(&str, String)],
    properties: &Properties,
    owned: &[Owned<'_>],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, v.as_str());
    }
    for (k, v) in properties {
        config.set(k.as_str(), v.as_str());
    }
    for o in owned {
        if let Some(user) = properties.get(o.key) {
            if user != o.value {
                let shown = if is_secret_key(o.key) { "***" } else { user };
                tracing::warn!(
                    "{connector} `{id}`: property `{}` = `{shown}` is ignored: the runtime sets \
                     it to `{}` ({})",
                    o.key,
                    o.value,
                    o.why
                );
            }
        }
        config.set(o.key, o.value.as_str());
    }
    config
}

/// The value librdkafka actually uses for `key` in a live client (after defaults, user
/// properties and runtime-owned keys), or `None` for an unknown key.
///
/// This reads the client's own configuration (`rd_kafka_conf_get` on `rd_kafka_conf`), so
/// tests and diagnostics can check what reached librdkafka rather than what was meant to.
pub fn effective_property<C: ClientContext>(client: &Client<C>, key: &str) -> Option<String> {
    let name = CString::new(key).ok()?;
    // SAFETY: `rd_kafka_conf` returns the configuration owned by the live client, valid
    // while `client` is borrowed. `rd_kafka_conf_get` is called first with a null buffer to
    // learn the size (including the NUL), then with a buffer of that size, and writes a
    // NUL-terminated string into it.
    unsafe {
        let conf = rdkafka::bindings::rd_kafka_conf(client.native_ptr());
        if conf.is_null() {
            return None;
        }
        let mut size: usize = 0;
        let rc = rdkafka::bindings::rd_kafka_conf_get(
            conf,
            name.as_ptr(),
            std::ptr::null_mut(),
            &mut size,
        );
        if rc != rdkafka::bindings::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK || size == 0 {
            return None;
        }
        let mut buf = vec![0u8; size];
        let rc = rdkafka::bindings::rd_kafka_conf_get(
            conf,
            name.as_ptr(),
            buf.as_mut_ptr() as *mut c_char,
            &mut size,
        );
        if rc != rdkafka::bindings::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        let text = CStr::from_bytes_until_nul(&buf).ok()?;
        Some(text.to_string_lossy().into_owned())
    }
}

/// Sends librdkafka's log lines and client errors to `tracing`, tagged with the connector
/// and its id, so they appear in the statefun log like everything else; and remembers the
/// first connection-setup failure (authentication, TLS trust) for [`first_contact`].
pub(crate) struct LogContext {
    pub connector: &'static str,
    pub id: String,
    setup_failure: Mutex<Option<SetupFailure>>,
}

/// A failure to set up a connection that retrying cannot fix: librdkafka retries these
/// forever (credentials might be rotated), so without this a wrong password or an untrusted
/// CA looks like a hang.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SetupFailure {
    /// What went wrong, in words.
    pub what: &'static str,
    /// librdkafka's own description.
    pub detail: String,
    /// What to change.
    pub fix: &'static str,
}

impl std::fmt::Display for SetupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.what, self.detail, self.fix)
    }
}

/// Classifies a librdkafka log line or error text: `Some` when it says a connection could
/// not be set up for a reason a retry cannot fix.
pub(crate) fn setup_failure(text: &str) -> Option<SetupFailure> {
    let detail = text.to_string();
    let has = |needle: &str| text.contains(needle);
    if has("SASL authentication error") || has("Authentication failed") {
        return Some(SetupFailure {
            what: "authentication failed",
            detail,
            fix: "check the user name and password (`sasl.username`/`sasl.password`, or \
                  `sasl.jaas.config`) and `sasl.mechanism`",
        });
    }
    if has("Failed to acquire SASL OAUTHBEARER token") || has("OAUTHBEARER token") && has("fail") {
        return Some(SetupFailure {
            what: "no OAUTHBEARER token",
            detail,
            fix: "check `sasl.oauthbearer.token.endpoint.url`, `sasl.oauthbearer.client.id` and \
                  `sasl.oauthbearer.client.secret` (and `sasl.oauthbearer.scope` if the \
                  provider needs one)",
        });
    }
    if has("Unsupported SASL mechanism") || has("SASL mechanism") && has("not") {
        return Some(SetupFailure {
            what: "the broker does not offer this SASL mechanism",
            detail,
            fix: "set `sasl.mechanism` to one the listener enables, and check that \
                  `security.protocol` matches the listener",
        });
    }
    if has("alert bad certificate")
        || has("alert certificate required")
        || has("alert unknown ca")
        || has("alert certificate unknown")
    {
        return Some(SetupFailure {
            what: "the broker rejected the client certificate (mutual TLS)",
            detail,
            fix: "set `ssl.certificate.location` and `ssl.key.location` (or \
                  `ssl.keystore.location`, PKCS#12) to a certificate signed by a CA the broker \
                  trusts",
        });
    }
    if has("certificate verify failed") || has("SSL handshake failed") {
        return Some(SetupFailure {
            what: "the broker's TLS certificate could not be verified",
            detail,
            fix: "set `ssl.ca.location` (or `ssl.truststore.location`) to the CA that signed the \
                  broker's certificate, and check that the address matches the certificate",
        });
    }
    None
}

impl LogContext {
    /// A context for client `id` of `connector` (e.g. `kafka ingress`).
    pub(crate) fn new(connector: &'static str, id: &str) -> LogContext {
        LogContext {
            connector,
            id: id.to_string(),
            setup_failure: Mutex::new(None),
        }
    }

    /// The first connection-setup failure librdkafka reported, if any.
    pub(crate) fn setup_failure(&self) -> Option<SetupFailure> {
        self.setup_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember(&self, text: &str) {
        if let Some(failure) = setup_failure(text) {
            let mut slot = self.setup_failure.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(failure);
            }
        }
    }

    pub(crate) fn log_line(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.remember(message);
        let (connector, id) = (self.connector, &self.id);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!("{connector} `{id}`: librdkafka {fac}: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!("{connector} `{id}`: librdkafka {fac}: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!("{connector} `{id}`: librdkafka {fac}: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!("{connector} `{id}`: librdkafka {fac}: {message}")
            }
        }
    }

    pub(crate) fn client_error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports transient broker trouble (a broker down, all brokers down) here
        // and retries by itself; fatal errors surface again where they matter (poll, flush).
        // Reaching the end of a partition is how readers that asked for it know they are
        // done, not trouble.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.remember(reason);
        tracing::warn!(
            "{} `{}`: Kafka client error: {error} ({reason})",
            self.connector,
            self.id
        );
    }
}

/// How long a source or sink opening waits for a broker to answer at all (an authentication
/// or TLS failure ends the wait at once, see [`first_contact`]).
const CONTACT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Contacts the cluster (a metadata request) before the client is used, so that a
/// connection that cannot be set up fails now, with its cause, instead of hanging in
/// librdkafka's retries: returns at once when [`LogContext`] saw an authentication or TLS
/// failure, and after [`CONTACT_TIMEOUT`] with the last error when the brokers do not
/// answer. The
/// error is [`ConnectorError::Open`] on `address`, ending with what to change.
///
/// `serve` serves the client's queue without taking records (a consumer's or producer's
/// `poll(0)` before anything is assigned or sent): librdkafka reports some of these failures
/// only as client errors, which reach [`LogContext`] when the queue is served.
pub(crate) fn first_contact<C: ClientContext>(
    client: &Client<C>,
    serve: &dyn Fn(),
    log: &LogContext,
    address: &str,
) -> Result<(), ConnectorError> {
    let timeout = CONTACT_TIMEOUT;
    let fail = |cause: String, fix: &str| {
        ConnectorError::open(
            log.connector,
            &log.id,
            address,
            fix,
            std::io::Error::other(cause),
        )
    };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let attempt = left.min(std::time::Duration::from_millis(500));
        let result = client.fetch_metadata(None, attempt);
        serve();
        if let Some(f) = log.setup_failure() {
            return Err(fail(format!("{}: {}", f.what, f.detail), f.fix));
        }
        match result {
            Ok(_) => return Ok(()),
            Err(e) if left <= attempt => {
                return Err(fail(
                    format!("no broker answered within {timeout:?} ({e})"),
                    "check the address, that the brokers run, and that `security.protocol` \
                     matches the listener",
                ))
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spreads_consecutive_partitions() {
        // Fixed values: changing the hash would move checkpointed offsets between workers.
        assert_eq!(partition_owner("orders", 0, 1), 0);
        let owners: Vec<usize> = (0..6).map(|p| partition_owner("orders", p, 3)).collect();
        for w in 0..3 {
            assert_eq!(owners.iter().filter(|o| **o == w).count(), 2, "{owners:?}");
        }
        assert_eq!(
            owners,
            (0..6)
                .map(|p| partition_owner("orders", p, 3))
                .collect::<Vec<_>>()
        );
        assert_eq!(partition_owner("orders", 5, 0), 0);
    }

    #[test]
    fn owned_keys_override_properties_and_defaults_yield_to_them() {
        let props = Properties(vec![
            ("enable.auto.commit".into(), "true".into()),
            ("client.id".into(), "mine".into()),
            ("auto.offset.reset".into(), "earliest".into()),
        ]);
        let cfg = client_config(
            "kafka ingress",
            "t/x",
            &[("auto.offset.reset", "latest".into())],
            &props,
            &[Owned {
                key: "enable.auto.commit",
                value: "false".into(),
                why: "checkpoints own the offsets",
            }],
        );
        assert_eq!(cfg.get("enable.auto.commit"), Some("false"));
        assert_eq!(cfg.get("client.id"), Some("mine"));
        assert_eq!(cfg.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn setup_failures_are_recognised_by_what_librdkafka_says() {
        // The texts librdkafka 2.x reports against the test broker's listeners.
        let wrong_password = "sasl_ssl://127.0.0.1:33197/bootstrap: SASL authentication error: \
            Authentication failed during authentication due to invalid credentials with SASL \
            mechanism SCRAM-SHA-512 (after 310ms in state AUTH_REQ)";
        let untrusted = "ssl://127.0.0.1:48217/bootstrap: SSL handshake failed: \
            error:0A000086:SSL routines::certificate verify failed: broker certificate could not \
            be verified (after 2ms in state SSL_HANDSHAKE)";
        let no_client_cert = "ssl://127.0.0.1:37749/bootstrap: Receive failed: \
            error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42";
        let plain_wrong =
            "SASL authentication error: Authentication failed: Invalid username or password";
        assert_eq!(
            setup_failure(wrong_password).map(|f| f.what),
            Some("authentication failed")
        );
        assert_eq!(
            setup_failure(plain_wrong).map(|f| f.what),
            Some("authentication failed")
        );
        assert_eq!(
            setup_failure(untrusted).map(|f| f.what),
            Some("the broker's TLS certificate could not be verified")
        );
        assert_eq!(
            setup_failure(no_client_cert).map(|f| f.what),
            Some("the broker rejected the client certificate (mutual TLS)")
        );
        // Transient trouble is retried, not a setup failure.
        assert_eq!(
            setup_failure("127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"),
            None
        );
        assert_eq!(setup_failure("1/1 brokers are down"), None);
    }
}
