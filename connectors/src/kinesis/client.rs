//! The Kinesis client shared by [`super::KinesisSource`] and [`super::KinesisSink`].
//!
//! One place maps module.yaml's `awsRegion`, `awsCredentials` and
//! `clientConfigProperties` onto the AWS SDK, so that the ingress and the
//! egress can never disagree about what a setting means, and the SDK types stay
//! out of the rest of the crate.

use std::time::Duration;

// aws-config re-exports these under deprecated names only; the new ones live in
// aws-runtime, which is not worth a direct dependency for one builder.
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::Client;
use statefun_module::{AwsCredentials, AwsRegion, Properties};

use crate::ConnectorError;

/// The `clientConfigProperties` the Kinesis connectors understand, with what
/// each sets. Names follow the AWS Java SDK's `ClientConfiguration`, which is
/// what upstream StateFun passes them to, and match case-insensitively;
/// durations are milliseconds.
///
/// | name | SDK setting |
/// | --- | --- |
/// | `MaxErrorRetry` | retries after the first attempt (standard retry mode) |
/// | `ConnectionTimeout` | connect timeout |
/// | `SocketTimeout` | read timeout |
/// | `RequestTimeout` | timeout of one attempt |
/// | `ClientExecutionTimeout` | timeout of a call including its retries |
///
/// `MaxConnections` and the other `ClientConfiguration` names have no setting
/// on the Rust SDK's default HTTP client; [`unsupported_client_properties`]
/// returns them so the engine can warn instead of silently ignoring them.
pub const SUPPORTED_CLIENT_PROPERTIES: &[&str] = &[
    "MaxErrorRetry",
    "ConnectionTimeout",
    "SocketTimeout",
    "RequestTimeout",
    "ClientExecutionTimeout",
];

/// The names in `properties` that are not in [`SUPPORTED_CLIENT_PROPERTIES`]
/// (in file order), for a validation warning that lists the supported names.
/// They are ignored when building the client.
pub fn unsupported_client_properties(properties: &Properties) -> Vec<String> {
    properties
        .0
        .iter()
        .filter(|(k, _)| supported_name(k).is_none())
        .map(|(k, _)| k.clone())
        .collect()
}

fn supported_name(key: &str) -> Option<&'static str> {
    SUPPORTED_CLIENT_PROPERTIES
        .iter()
        .copied()
        .find(|s| s.eq_ignore_ascii_case(key))
}

/// Who is building a client, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Who<'a> {
    pub connector: &'static str,
    pub id: &'a str,
}

impl Who<'_> {
    pub(crate) fn error(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::config(self.connector, self.id, message)
    }
}

/// Builds a client from the module's settings. Must run inside a tokio runtime
/// (the SDK's default credential and region chains are async).
pub(crate) async fn build_client(
    who: Who<'_>,
    region: &AwsRegion,
    credentials: &AwsCredentials,
    properties: &Properties,
) -> Result<Client, ConnectorError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    match region {
        AwsRegion::Default => {}
        AwsRegion::Specific(id) => loader = loader.region(Region::new(id.clone())),
        AwsRegion::CustomEndpoint { endpoint, id } => {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(who.error(format!(
                    "awsRegion.endpoint `{endpoint}` is not an http:// or https:// URL; \
                     fix it in module.yaml"
                )));
            }
            loader = loader
                .region(Region::new(id.clone()))
                .endpoint_url(endpoint.clone());
        }
    }
    match credentials {
        AwsCredentials::Default => {}
        AwsCredentials::Basic {
            access_key_id,
            secret_access_key,
        } => {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_string(),
                None,
                None,
                "module.yaml awsCredentials basic",
            ));
        }
        #[allow(deprecated)]
        AwsCredentials::Profile { name, path } => {
            let mut builder = ProfileFileCredentialsProvider::builder().profile_name(name);
            if let Some(path) = path {
                builder = builder.profile_files(
                    ProfileFiles::builder()
                        .with_file(ProfileFileKind::Credentials, path)
                        .include_default_config_file(true)
                        .build(),
                );
            }
            loader = loader.credentials_provider(builder.build());
        }
    }

    let mut timeouts = TimeoutConfig::builder();
    let mut retry: Option<RetryConfig> = None;
    for (key, value) in &properties.0 {
        let Some(name) = supported_name(key) else {
            continue;
        };
        let number: u64 = value.trim().parse().map_err(|_| {
            who.error(format!(
                "clientConfigProperties `{key}: {value}` is not a non-negative integer \
                 ({} in milliseconds)",
                if name == "MaxErrorRetry" {
                    "a retry count, not"
                } else {
                    "a duration"
                }
            ))
        })?;
        let millis = Duration::from_millis(number);
        match name {
            "MaxErrorRetry" => {
                let attempts = u32::try_from(number.saturating_add(1)).unwrap_or(u32::MAX);
                retry = Some(RetryConfig::standard().with_max_attempts(attempts));
            }
            "ConnectionTimeout" => timeouts = timeouts.connect_timeout(millis),
            "SocketTimeout" => timeouts = timeouts.read_timeout(millis),
            "RequestTimeout" => timeouts = timeouts.operation_attempt_timeout(millis),
            "ClientExecutionTimeout" => timeouts = timeouts.operation_timeout(millis),
            _ => {}
        }
    }
    loader = loader.timeout_config(timeouts.build());
    if let Some(retry) = retry {
        loader = loader.retry_config(retry);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(who.error(
            "no AWS region: awsRegion is `default` and the SDK's region chain \
             (AWS_REGION, the profile, instance metadata) found none; set awsRegion \
             `specific` or `custom-endpoint` in module.yaml",
        ));
    }
    Ok(Client::new(&config))
}

/// How a failed call should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Throttling, a 5xx, a timeout or a dropped connection: retry with backoff.
    Transient,
    /// The shard iterator expired: get a new one and go on.
    ExpiredIterator,
    /// Anything else (unknown stream, bad ARN, refused credentials, …): fatal.
    Fatal,
}

/// Classifies an SDK error and renders it with its full cause chain.
pub(crate) fn classify<E, R>(err: &SdkError<E, R>) -> (Failure, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // Service errors read best as `Code: message`; the full context of the
    // others (dispatch, timeout, construction) says which layer failed.
    let text = match err {
        SdkError::ServiceError(service) => format!(
            "{}: {}",
            service.err().code().unwrap_or("unknown error"),
            service.err().message().unwrap_or("no message")
        ),
        other => DisplayErrorContext(other).to_string(),
    };
    let failure = match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => Failure::Transient,
        // Only network failures are worth retrying; a credentials or
        // configuration failure surfaces as a dispatch failure too.
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Failure::Transient,
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ExpiredIteratorException") => Failure::ExpiredIterator,
            Some(
                "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "ThrottlingException"
                | "KMSThrottlingException"
                | "InternalFailure"
                | "InternalFailureException"
                | "ServiceUnavailable"
                | "ServiceUnavailableException",
            ) => Failure::Transient,
            _ => Failure::Fatal,
        },
        _ => Failure::Fatal,
    };
    (failure, text)
}

/// The error of a call on `stream` that failed for good: the SDK's `message`,
/// with the hint [`hint_for`] gives for it.
pub(crate) fn stream_error(
    connector: &'static str,
    id: &str,
    stream: &str,
    message: String,
) -> ConnectorError {
    let hint = hint_for(&message);
    ConnectorError::io(connector, id, stream, hint, std::io::Error::other(message))
}

/// A hint for a fatal error, by AWS error code.
pub(crate) fn hint_for(text: &str) -> &'static str {
    if text.contains("ResourceNotFound") {
        "check the stream name/ARN, the account and the region in module.yaml, and that the \
         stream exists"
    } else if text.contains("UnrecognizedClient")
        || text.contains("InvalidSignature")
        || text.contains("AccessDenied")
        || text.contains("ExpiredToken")
        || text.to_ascii_lowercase().contains("credential")
    {
        "check awsCredentials in module.yaml: the credentials must resolve and may use this stream"
    } else if text.contains("InvalidArgument") || text.contains("ValidationException") {
        "check the stream ARN and names in module.yaml"
    } else {
        "check awsRegion, the endpoint and the network"
    }
}

/// The pause before retry `attempt` of a Kinesis call: `base * 2^attempt`,
/// capped, with ±25 % jitter (the schedule of `statefun-retry`) so that many
/// shard readers throttled together do not retry together.
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    statefun_retry::jitter(statefun_retry::exponential(base, cap, attempt), 0.75, 1.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_properties_are_listed_in_order() {
        let props = Properties(vec![
            ("SocketTimeout".into(), "1000".into()),
            ("MaxConnections".into(), "10".into()),
            ("maxerrorretry".into(), "3".into()),
            ("Foo".into(), "x".into()),
        ]);
        assert_eq!(
            unsupported_client_properties(&props),
            vec!["MaxConnections".to_string(), "Foo".to_string()]
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = |a| backoff(Duration::from_millis(100), Duration::from_secs(2), a);
        assert!(b(0) <= Duration::from_millis(125));
        assert!(b(3) >= Duration::from_millis(600));
        assert!(b(30) <= Duration::from_millis(2500));
    }
}
