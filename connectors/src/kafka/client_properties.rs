//! The `properties` of a Kafka ingress or egress as librdkafka takes them.
//!
//! StateFun users write *Java* Kafka client properties (StateFun passes them to the Java
//! client): `sasl.jaas.config`, `ssl.truststore.location`, `key.deserializer`, … librdkafka
//! rejects most of those at open, after the module looked valid. [`client_properties`]
//! turns a module's properties into librdkafka's before anything opens, so `validate` and
//! `run` agree:
//!
//! * `sasl.jaas.config` becomes librdkafka's own keys: `PlainLoginModule` and
//!   `ScramLoginModule` → `sasl.username`/`sasl.password`; `OAuthBearerLoginModule` →
//!   `sasl.oauthbearer.client.id`/`client.secret`/`scope` with `sasl.oauthbearer.method=oidc`
//!   when `sasl.oauthbearer.token.endpoint.url` is set, else the unsecured test login
//!   (`sasl.oauthbearer.config`); `Krb5LoginModule` → `sasl.kerberos.keytab`/`principal`.
//!   Keys set explicitly win over the JAAS ones.
//! * Java keystores: a PEM truststore becomes `ssl.ca.location`; a PKCS#12 truststore is read
//!   (with `ssl.truststore.password`) and its certificates passed as `ssl.ca.pem`; a PKCS#12
//!   keystore is librdkafka's own `ssl.keystore.location`; a PEM keystore becomes
//!   `ssl.certificate.location` + `ssl.key.location`. JKS is an error naming the `keytool`
//!   command that converts it. The store type comes from `ssl.*store.type`, else the file.
//! * `ssl.endpoint.identification.algorithm=` (empty: Java's "off") becomes `none`.
//! * Java-only settings with no librdkafka meaning (`key.deserializer`, `max.poll.records`,
//!   `interceptor.classes`, …) are dropped, each named in a note with the reason.
//! * Every remaining key is checked against librdkafka itself (`rd_kafka_conf_set` on a
//!   scratch configuration), so a typo fails with librdkafka's message before the job starts.

use std::path::Path;

use rdkafka::config::ClientConfig;
use statefun_module::Properties;

/// Module properties turned into librdkafka's, with what was changed or dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientProperties {
    /// What librdkafka gets.
    pub properties: Properties,
    /// One line per translated or dropped key (never with a secret value), for a warning.
    pub notes: Vec<String>,
}

/// Java client settings librdkafka has no use for, and why they can go.
const JAVA_ONLY: &[(&str, &str)] = &[
    (
        "key.deserializer",
        "records reach functions as bytes, typed by `valueType`",
    ),
    (
        "value.deserializer",
        "records reach functions as bytes, typed by `valueType`",
    ),
    ("key.serializer", "egress records are bytes already"),
    ("value.serializer", "egress records are bytes already"),
    (
        "max.poll.records",
        "the runtime polls in batches of its own (--source-batch)",
    ),
    ("interceptor.classes", "Java classes cannot run here"),
    (
        "sasl.login.callback.handler.class",
        "librdkafka has its own login handlers",
    ),
    (
        "sasl.client.callback.handler.class",
        "librdkafka has its own login handlers",
    ),
    ("sasl.login.class", "librdkafka has its own login handlers"),
    ("security.providers", "Java security providers do not apply"),
    ("ssl.keymanager.algorithm", "a Java TLS setting"),
    ("ssl.trustmanager.algorithm", "a Java TLS setting"),
    ("ssl.protocol", "OpenSSL negotiates the TLS version"),
    (
        "ssl.enabled.protocols",
        "OpenSSL negotiates the TLS version",
    ),
    ("ssl.secure.random.implementation", "a Java TLS setting"),
    ("ssl.engine.factory.class", "a Java TLS setting"),
    ("default.api.timeout.ms", "a Java client timeout"),
    (
        "exclude.internal.topics",
        "the ingress reads only the topics it names",
    ),
    ("auto.include.jmx.reporter", "Java metrics"),
    ("metric.reporters", "Java metrics"),
    ("metrics.num.samples", "Java metrics"),
    ("metrics.recording.level", "Java metrics"),
    ("metrics.sample.window.ms", "Java metrics"),
    ("enable.metrics.push", "Java metrics"),
    (
        "buffer.memory",
        "librdkafka's is `queue.buffering.max.kbytes`",
    ),
    ("max.block.ms", "librdkafka never blocks a send"),
    (
        "group.instance.id",
        "partitions are assigned, not group-managed",
    ),
    (
        "sasl.kerberos.kinit.cmd",
        "set librdkafka's `sasl.kerberos.kinit.cmd` instead",
    ),
];

/// Java client settings librdkafka has under another name.
const RENAMED: &[(&str, &str)] = &[
    ("fetch.max.wait.ms", "fetch.wait.max.ms"),
    ("send.buffer.bytes", "socket.send.buffer.bytes"),
    ("receive.buffer.bytes", "socket.receive.buffer.bytes"),
];

/// Turns module `properties` into librdkafka's (see the module docs). `properties_file`
/// (a cluster's `propertiesFile`, Java `.properties` format) is read first, and `properties`
/// override it; `${NAME}` in any value is replaced by the environment variable `NAME`
/// (`$${` stands for a literal `${`), so module.yaml can be committed without its secrets.
/// `Err` lists every property that cannot work, each with what to do; values of secrets,
/// and values that came from the environment, never appear.
pub fn client_properties(
    properties: &Properties,
    properties_file: Option<&str>,
) -> Result<ClientProperties, Vec<String>> {
    let mut errors = Vec::new();
    let mut merged: Vec<(String, String)> = match properties_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => java_properties(&text),
            Err(e) => {
                return Err(vec![format!(
                    "cannot read the cluster's propertiesFile `{path}`: {e}; check the path \
                     (relative paths start at the module file's directory)"
                )])
            }
        },
        None => Vec::new(),
    };
    merged.retain(|(k, _)| properties.get(k).is_none());
    merged.extend(properties.iter().cloned());
    let mut expanded = Vec::with_capacity(merged.len());
    // Values that came from the environment are never shown.
    let from_env: Vec<String> = merged
        .iter()
        .filter(|(_, v)| v.contains("${"))
        .map(|(k, _)| k.clone())
        .collect();
    for (key, value) in merged {
        match expand_env(&value, |name| std::env::var(name).ok()) {
            Ok(v) => expanded.push((key, v)),
            Err(name) => errors.push(format!(
                "property `{key}`: the environment variable `{name}` (in `${{{name}}}`) is not \
                 set; set it before starting the job, or write `$${{` for a literal `${{`"
            )),
        }
    }
    let properties = &Properties(expanded);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut notes = Vec::new();
    let explicit = |key: &str| properties.get(key).is_some();
    let set = |out: &mut Vec<(String, String)>, key: &str, value: String| {
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    };
    for (key, value) in properties.iter() {
        match key.as_str() {
            "sasl.jaas.config" => match jaas(value) {
                Ok(login) => {
                    for (k, v) in login.properties(properties) {
                        if explicit(&k) {
                            notes.push(format!(
                                "`sasl.jaas.config`: `{k}` is set explicitly, which wins over \
                                 the JAAS option"
                            ));
                        } else {
                            set(&mut out, &k, v);
                        }
                    }
                    notes.push(format!(
                        "`sasl.jaas.config` ({}) translated to librdkafka's {}",
                        login.module,
                        login.keys(properties).join(", ")
                    ));
                }
                Err(e) => errors.push(format!("property `sasl.jaas.config`: {e}")),
            },
            "ssl.truststore.location" => {
                let kind = store_type(properties, "ssl.truststore.type", value);
                match kind {
                    Ok(StoreType::Pem) => {
                        set(&mut out, "ssl.ca.location", value.clone());
                        notes.push("`ssl.truststore.location` (PEM) → `ssl.ca.location`".into());
                    }
                    Ok(StoreType::Pkcs12) => {
                        let password = properties.get("ssl.truststore.password").unwrap_or("");
                        match pkcs12_certificates(Path::new(value), password) {
                            Ok(pem) => {
                                set(&mut out, "ssl.ca.pem", pem);
                                notes.push(
                                    "`ssl.truststore.location` (PKCS#12) read; its \
                                     certificates → `ssl.ca.pem`"
                                        .into(),
                                );
                            }
                            Err(e) => {
                                errors.push(format!("property `ssl.truststore.location`: {e}"))
                            }
                        }
                    }
                    Ok(StoreType::Jks) => errors.push(jks_error("ssl.truststore.location", value)),
                    Err(e) => errors.push(format!("property `ssl.truststore.location`: {e}")),
                }
            }
            "ssl.keystore.location" => match store_type(properties, "ssl.keystore.type", value) {
                Ok(StoreType::Pkcs12) => set(&mut out, key, value.clone()),
                Ok(StoreType::Pem) => {
                    set(&mut out, "ssl.certificate.location", value.clone());
                    set(&mut out, "ssl.key.location", value.clone());
                    notes.push(
                        "`ssl.keystore.location` (PEM) → `ssl.certificate.location` and \
                             `ssl.key.location`"
                            .into(),
                    );
                }
                Ok(StoreType::Jks) => errors.push(jks_error("ssl.keystore.location", value)),
                Err(e) => errors.push(format!("property `ssl.keystore.location`: {e}")),
            },
            // Consumed with their stores above.
            "ssl.truststore.type" | "ssl.keystore.type" | "ssl.truststore.password" => {}
            "ssl.endpoint.identification.algorithm" if value.trim().is_empty() => {
                set(&mut out, key, "none".into());
            }
            "partition.assignment.strategy" if value.contains("org.apache.kafka") => {
                notes.push(
                    "`partition.assignment.strategy` (a Java class) is ignored: partitions are \
                     assigned by the runtime, not by the consumer group"
                        .into(),
                );
            }
            _ => {
                if let Some((_, why)) = JAVA_ONLY.iter().find(|(k, _)| k == key) {
                    notes.push(format!(
                        "`{key}` is a Java client setting and is ignored: {why}"
                    ));
                } else if let Some((_, ours)) = RENAMED.iter().find(|(k, _)| k == key) {
                    if !explicit(ours) {
                        set(&mut out, ours, value.clone());
                    }
                    notes.push(format!("`{key}` (Java) → librdkafka's `{ours}`"));
                } else {
                    set(&mut out, key, value.clone());
                }
            }
        }
    }
    // Everything left must be a librdkafka property with a value it takes (`statefun.*`
    // keys are the runtime's own, read by the connectors).
    for (key, value) in out.iter().filter(|(k, _)| !k.starts_with("statefun.")) {
        if let Err(e) = ClientConfig::new().set(key, value).create_native_config() {
            let why = describe_conf_error(&e);
            // An unknown key may be a misspelt secret: its value is never shown.
            let shown = if statefun_module::is_secret_key(key)
                || why.contains("No such")
                || from_env.contains(key)
            {
                String::new()
            } else {
                format!(" = `{value}`")
            };
            errors.push(format!(
                "property `{key}`{shown} is not one librdkafka takes ({why}); see \
                 https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md"
            ));
        }
    }
    if errors.is_empty() {
        Ok(ClientProperties {
            properties: Properties(out),
            notes,
        })
    } else {
        Err(errors)
    }
}

/// `${NAME}` in `value` replaced by `lookup(NAME)`; `$${` is a literal `${`. `Err` names
/// the first variable `lookup` does not know.
fn expand_env(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            match tail.find('}') {
                Some(end) => {
                    let name = &tail[..end];
                    out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str(after);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The `key=value` pairs of a Java `.properties` file (what Confluent Cloud, MSK and
/// Aiven hand out as `client.properties`): `#`/`!` comments, `=`, `:` or blanks between key
/// and value, `\` line continuations and escapes (`\t`, `\n`, `\uXXXX`, `\=`, …).
fn java_properties(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let (key, value) = split_entry(&entry);
        out.retain(|(k, _)| *k != key);
        out.push((key, value));
    }
    if !logical.is_empty() {
        let (key, value) = split_entry(&logical);
        out.push((key, value));
    }
    out
}

/// Splits a logical line at the first unescaped `=`, `:` or blank, unescaping both parts.
fn split_entry(entry: &str) -> (String, String) {
    let chars: Vec<char> = entry.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '=' | ':' | ' ' | '\t' => break,
            _ => i += 1,
        }
    }
    let key: String = chars[..i.min(chars.len())].iter().collect();
    let mut j = i;
    while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
        j += 1;
    }
    if j < chars.len() && (chars[j] == '=' || chars[j] == ':') {
        j += 1;
    }
    while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
        j += 1;
    }
    let value: String = chars[j.min(chars.len())..].iter().collect();
    (unescape(&key), unescape(&value))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// librdkafka's message for a rejected property, without repeating the value.
fn describe_conf_error(e: &rdkafka::error::KafkaError) -> String {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, message, _, _) => message.clone(),
        other => other.to_string(),
    }
}

fn jks_error(key: &str, path: &str) -> String {
    format!(
        "property `{key}`: `{path}` is a JKS keystore, which librdkafka cannot read; convert it \
         to PKCS#12 with `keytool -importkeystore -srckeystore {path} -srcstoretype JKS \
         -destkeystore {path}.p12 -deststoretype PKCS12` and point `{key}` at the .p12 file"
    )
}

#[derive(Debug, PartialEq)]
enum StoreType {
    Pem,
    Pkcs12,
    Jks,
}

/// The store type from `type_key`, else from the file's first bytes.
fn store_type(properties: &Properties, type_key: &str, path: &str) -> Result<StoreType, String> {
    if let Some(t) = properties.get(type_key) {
        return match t.trim().to_ascii_uppercase().as_str() {
            "PEM" => Ok(StoreType::Pem),
            "PKCS12" | "P12" => Ok(StoreType::Pkcs12),
            "JKS" | "JCEKS" => Ok(StoreType::Jks),
            other => Err(format!(
                "`{type_key}` = `{other}` is not a store type librdkafka can use (PEM, PKCS12)"
            )),
        };
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let head = &head[..n];
    if head.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) || head.starts_with(&[0xce, 0xce, 0xce, 0xce]) {
        Ok(StoreType::Jks)
    } else if head.starts_with(b"-----BEGIN") || head.iter().all(|b| b.is_ascii()) && n > 0 {
        Ok(StoreType::Pem)
    } else {
        Ok(StoreType::Pkcs12)
    }
}

/// The certificates of a PKCS#12 truststore, as PEM text.
fn pkcs12_certificates(path: &Path, password: &str) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let parsed = openssl::pkcs12::Pkcs12::from_der(&bytes)
        .and_then(|p| p.parse2(password))
        .map_err(|e| {
            format!(
                "cannot read `{}` as PKCS#12 with `ssl.truststore.password` ({e}); check the \
                 password and that the file is a PKCS#12 truststore",
                path.display()
            )
        })?;
    let mut pem = String::new();
    let certs = parsed
        .cert
        .into_iter()
        .chain(parsed.ca.into_iter().flatten());
    for cert in certs {
        let text = cert
            .to_pem()
            .map_err(|e| format!("a certificate in `{}`: {e}", path.display()))?;
        pem.push_str(&String::from_utf8_lossy(&text));
    }
    if pem.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(pem)
}

/// A parsed `sasl.jaas.config`: `<LoginModule class> <flag> key="value" ...;`.
#[derive(Debug, PartialEq)]
struct Jaas {
    /// The login module's class name, without its package.
    module: String,
    options: Vec<(String, String)>,
}

fn jaas(text: &str) -> Result<Jaas, String> {
    let text = text.trim().trim_end_matches(';').trim();
    let (class, rest) = text
        .split_once(char::is_whitespace)
        .ok_or("expected `<LoginModule class> required key=\"value\" ...;`")?;
    let rest = rest.trim_start();
    let (flag, mut rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !["required", "requisite", "sufficient", "optional"].contains(&flag) {
        return Err(format!(
            "expected a control flag (`required`) after `{class}`, found `{flag}`"
        ));
    }
    let mut options = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        // The text may hold a secret: errors name keys, never values.
        let (key, after) = rest
            .split_once('=')
            .ok_or("an option without `=` (expected key=\"value\")")?;
        let key = key.trim().to_string();
        let after = after.trim_start();
        // Kafka's JAAS parser takes double or single quotes (Confluent Cloud's
        // client.properties uses single ones).
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        let (value, remaining) = if let Some(q) = quote {
            let quoted = &after[1..];
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    c if c == q => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("the value of `{key}` has no closing quote"))?;
            (value, &quoted[end..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        options.push((key, value));
        rest = remaining;
    }
    let module = class.rsplit('.').next().unwrap_or(class).to_string();
    Ok(Jaas { module, options })
}

impl Jaas {
    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// librdkafka's properties for this login.
    fn properties(&self, all: &Properties) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.push((k.to_string(), v.to_string()));
            }
        };
        match self.module.as_str() {
            "PlainLoginModule" | "ScramLoginModule" => {
                put("sasl.username", self.option("username"));
                put("sasl.password", self.option("password"));
            }
            "OAuthBearerLoginModule" => {
                if all.get("sasl.oauthbearer.token.endpoint.url").is_some() {
                    put("sasl.oauthbearer.method", Some("oidc"));
                    put("sasl.oauthbearer.client.id", self.option("clientId"));
                    put(
                        "sasl.oauthbearer.client.secret",
                        self.option("clientSecret"),
                    );
                    put("sasl.oauthbearer.scope", self.option("scope"));
                } else if let Some(sub) = self.option("unsecuredLoginStringClaim_sub") {
                    put("sasl.oauthbearer.config", Some(&format!("principal={sub}")));
                }
            }
            "Krb5LoginModule" => {
                put("sasl.kerberos.keytab", self.option("keyTab"));
                put("sasl.kerberos.principal", self.option("principal"));
            }
            _ => {}
        }
        out
    }

    /// The keys [`Jaas::properties`] sets, for the note.
    fn keys(&self, all: &Properties) -> Vec<String> {
        let keys: Vec<String> = self
            .properties(all)
            .into_iter()
            .map(|(k, _)| format!("`{k}`"))
            .collect();
        if keys.is_empty() {
            vec!["nothing (no options librdkafka uses)".into()]
        } else {
            keys
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        Properties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn jaas_logins_become_librdkafka_keys() {
        let scram = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="s3cr\"et";"#,
            ),
        ]);
        let got = client_properties(&scram, None).expect("valid");
        assert_eq!(got.properties.get("sasl.username"), Some("alice"));
        assert_eq!(got.properties.get("sasl.password"), Some("s3cr\"et"));
        assert_eq!(got.properties.get("sasl.jaas.config"), None);
        assert!(
            got.notes.iter().all(|n| !n.contains("s3cr")),
            "{:?}",
            got.notes
        );

        let oidc = props(&[
            ("sasl.mechanism", "OAUTHBEARER"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.oauthbearer.token.endpoint.url", "https://idp.example/token"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId=\"job\" clientSecret=\"sec\" scope=\"kafka\";",
            ),
            (
                "sasl.login.callback.handler.class",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler",
            ),
        ]);
        let got = client_properties(&oidc, None).expect("valid");
        assert_eq!(got.properties.get("sasl.oauthbearer.method"), Some("oidc"));
        assert_eq!(
            got.properties.get("sasl.oauthbearer.client.id"),
            Some("job")
        );
        assert_eq!(
            got.properties.get("sasl.oauthbearer.client.secret"),
            Some("sec")
        );
        assert_eq!(got.properties.get("sasl.oauthbearer.scope"), Some("kafka"));
        assert_eq!(
            got.properties.get("sasl.login.callback.handler.class"),
            None
        );

        // An explicit key wins over the JAAS option.
        let explicit = props(&[
            ("sasl.username", "bob"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="alice" password="p";"#,
            ),
        ]);
        let got = client_properties(&explicit, None).expect("valid");
        assert_eq!(got.properties.get("sasl.username"), Some("bob"));
        assert_eq!(got.properties.get("sasl.password"), Some("p"));
    }

    #[test]
    fn bad_jaas_and_unknown_keys_are_errors_without_secrets() {
        let bad = props(&[("sasl.jaas.config", "ScramLoginModule username=\"a\";")]);
        let errors = client_properties(&bad, None).expect_err("no control flag");
        assert!(errors[0].contains("control flag"), "{errors:?}");
        let unclosed = props(&[(
            "sasl.jaas.config",
            "ScramLoginModule required password=\"abc;",
        )]);
        let errors = client_properties(&unclosed, None).expect_err("unclosed");
        assert!(
            errors[0].contains("closing quote") && !errors[0].contains("abc"),
            "{errors:?}"
        );
        let typo = props(&[("bootstrap.server", "x:9092"), ("sasl.passwrod", "hunter2")]);
        let errors = client_properties(&typo, None).expect_err("typos");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("`bootstrap.server`"), "{errors:?}");
        assert!(!errors.join(" ").contains("hunter2"), "{errors:?}");
        let bad_value = props(&[("security.protocol", "TLS")]);
        let errors = client_properties(&bad_value, None).expect_err("bad value");
        assert!(errors[0].contains("security.protocol"), "{errors:?}");
    }

    #[test]
    fn java_only_settings_are_dropped_with_a_reason() {
        let java = props(&[
            (
                "key.deserializer",
                "org.apache.kafka.common.serialization.StringDeserializer",
            ),
            ("max.poll.records", "500"),
            ("fetch.max.wait.ms", "100"),
            (
                "partition.assignment.strategy",
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
            ),
            ("ssl.endpoint.identification.algorithm", ""),
        ]);
        let got = client_properties(&java, None).expect("valid");
        assert_eq!(got.properties.get("key.deserializer"), None);
        assert_eq!(got.properties.get("max.poll.records"), None);
        assert_eq!(got.properties.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(
            got.properties.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        assert_eq!(got.notes.len(), 4, "{:?}", got.notes);
        assert!(got.notes[0].contains("key.deserializer") && got.notes[0].contains("valueType"));
    }

    #[test]
    fn environment_variables_fill_in_values_and_a_missing_one_is_named() {
        let env = |name: &str| (name == "KAFKA_PW").then(|| "pw-from-env".to_string());
        assert_eq!(expand_env("a${KAFKA_PW}b", env), Ok("apw-from-envb".into()));
        assert_eq!(
            expand_env("$${KAFKA_PW} $x ${", env),
            Ok("${KAFKA_PW} $x ${".into())
        );
        assert_eq!(expand_env("${NOPE}", env), Err("NOPE".into()));
        let missing = props(&[("sasl.password", "${STATEFUN_TEST_SURELY_UNSET_VAR}")]);
        let errors = client_properties(&missing, None).expect_err("unset");
        assert!(
            errors[0].contains("`STATEFUN_TEST_SURELY_UNSET_VAR`")
                && errors[0].contains("sasl.password"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_client_properties_file_is_the_base_that_properties_override() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("client.properties");
        // As Confluent Cloud hands it out (single-quoted JAAS values), with a continuation.
        std::fs::write(
            &file,
            "# Required connection configs for Kafka producer, consumer, and admin\n\
             bootstrap.servers=pkc-xxxx.confluent.cloud:9092\n\
             security.protocol=SASL_SSL\n\
             sasl.mechanisms=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\\n   \
             required username='KEY' password='SECRET';\n\
             ! another comment\n\
             client.dns.lookup = use_all_dns_ips\n\
             session.timeout.ms: 45000\n\
             acks=all\n",
        )
        .expect("write");
        let own = props(&[("acks", "1")]);
        let got = client_properties(&own, Some(&file.to_string_lossy())).expect("valid");
        assert_eq!(got.properties.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(got.properties.get("sasl.username"), Some("KEY"));
        assert_eq!(got.properties.get("sasl.password"), Some("SECRET"));
        assert_eq!(got.properties.get("session.timeout.ms"), Some("45000"));
        assert_eq!(
            got.properties.get("client.dns.lookup"),
            Some("use_all_dns_ips")
        );
        assert_eq!(
            got.properties.get("acks"),
            Some("1"),
            "properties override the file"
        );
        let missing = client_properties(&own, Some("/nonexistent/client.properties"))
            .expect_err("missing file");
        assert!(
            missing[0].contains("/nonexistent/client.properties"),
            "{missing:?}"
        );
    }

    #[test]
    fn keystores_by_type_and_jks_is_an_error_with_the_keytool_command() {
        let dir = tempfile::tempdir().expect("temp dir");
        let jks = dir.path().join("trust.jks");
        std::fs::write(&jks, [0xfe, 0xed, 0xfe, 0xed, 0, 0, 0, 2]).expect("write");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let jks = jks.to_string_lossy().into_owned();
        let errors =
            client_properties(&props(&[("ssl.truststore.location", &jks)]), None).expect_err("jks");
        assert!(
            errors[0].contains("keytool -importkeystore") && errors[0].contains(&jks),
            "{errors:?}"
        );
        let pem = pem.to_string_lossy().into_owned();
        let got = client_properties(
            &props(&[
                ("ssl.truststore.location", &pem),
                ("ssl.truststore.type", "PEM"),
                ("ssl.keystore.location", &pem),
                ("ssl.keystore.type", "PEM"),
            ]),
            None,
        )
        .expect("pem");
        assert_eq!(got.properties.get("ssl.ca.location"), Some(pem.as_str()));
        assert_eq!(
            got.properties.get("ssl.certificate.location"),
            Some(pem.as_str())
        );
        assert_eq!(got.properties.get("ssl.key.location"), Some(pem.as_str()));
        assert_eq!(got.properties.get("ssl.truststore.type"), None);
        let missing = client_properties(
            &props(&[("ssl.truststore.location", "/nonexistent/x")]),
            None,
        )
        .expect_err("missing");
        assert!(missing[0].contains("/nonexistent/x"), "{missing:?}");
    }
}
