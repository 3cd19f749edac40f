//! What the Kafka source and sink share: client configuration with runtime-owned keys,
//! the partition → worker hash, librdkafka logging through `tracing`, and reading back
//! the effective configuration of a live client.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use statefun_module::{is_secret_key, Properties};

/// The worker (of `peers`, counted over all processes) that reads `partition` of `topic`.
///
/// `(fnv1a64(topic) + partition) mod peers`: fixed and documented because every worker
/// computes it on its own and all must agree, and because checkpointed offsets are restored
/// by it. Adding the partition number (instead of hashing it) spreads the consecutive
/// partitions of one topic evenly over the workers.
pub fn partition_owner(topic: &str, partition: i32, peers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
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
/// and its id, so they appear in the statefun log like everything else.
pub(crate) struct LogContext {
    pub connector: &'static str,
    pub id: String,
}

impl LogContext {
    pub(crate) fn log_line(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
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
        tracing::warn!(
            "{} `{}`: Kafka client error: {error} ({reason})",
            self.connector,
            self.id
        );
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
}
