//! `io.statefun.endpoints.v1/http` and `io.statefun.endpoints.v2/http`: which functions an
//! endpoint serves, its URL template, and its HTTP transport (v1 `timeouts`, v2 `transport`).
//!
//! Whether two endpoints serve the same functions is a check across documents, in `load`.

use std::time::Duration;

use crate::fields::expected_one_of;
use crate::load::Loader;
use crate::model::{EndpointVersion, HttpEndpoint, HttpTransport, Secret, TransportType};
use crate::yaml::{Mark, Node};

use super::Kind;

impl Loader<'_> {
    pub(super) fn endpoint(&mut self, kind: Kind, spec: &Node, path: &str) {
        let v2 = kind == Kind::EndpointV2;
        let known: &[&str] = if v2 {
            &[
                "functions",
                "urlPathTemplate",
                "maxNumBatchRequests",
                "transport",
            ]
        } else {
            &[
                "functions",
                "urlPathTemplate",
                "maxNumBatchRequests",
                "timeouts",
            ]
        };
        let Some(o) = self.obj(spec, path, known) else {
            return;
        };
        let functions = self
            .req(&o, "functions")
            .and_then(|n| self.pattern(n, &o.field("functions")));
        let url = self.req_str(&o, "urlPathTemplate");
        if let (Some(u), Some(n)) = (&url, o.get("urlPathTemplate")) {
            self.check_url(u, n.mark, &o.field("urlPathTemplate"));
        }
        let max = self.opt_uint(&o, "maxNumBatchRequests", 1000, 1);
        let mut transport = HttpTransport::default();
        if let Some(n) = o.get("timeouts") {
            self.timeouts(n, &o.field("timeouts"), &mut transport);
        }
        if let Some(n) = o.get("transport") {
            self.transport(n, &o.field("transport"), &mut transport);
        }
        let (Some(functions), Some(url)) = (functions, url) else {
            return;
        };
        let fmark = o.get("functions").map_or(o.mark, |n| n.mark);
        self.module
            .locations
            .endpoints
            .push(self.location(fmark, &o.field("functions")));
        self.module.endpoints.push(HttpEndpoint {
            functions,
            url_path_template: url,
            max_num_batch_requests: usize::try_from(max).unwrap_or(usize::MAX),
            version: if v2 {
                EndpointVersion::V2
            } else {
                EndpointVersion::V1
            },
            transport,
        });
    }

    fn check_url(&mut self, url: &str, mark: Mark, path: &str) {
        let Some((scheme, rest)) = url.split_once("://") else {
            self.error(
                mark,
                path,
                format!("`{url}` is not a URL; write e.g. `http://host:8000/{{function.name}}`"),
            );
            return;
        };
        let schemes = ["http", "https", "http+unix", "https+unix"];
        if !schemes.contains(&scheme) {
            self.error(
                mark,
                path,
                format!(
                    "unsupported URL scheme `{scheme}`; {}",
                    expected_one_of(scheme, &schemes)
                ),
            );
            return;
        }
        if rest.is_empty() || rest.starts_with('{') {
            self.error(
                mark,
                path,
                format!("`{url}` has no host (or, for `+unix`, no socket path)"),
            );
            return;
        }
        if scheme.ends_with("+unix") && !rest.starts_with('/') {
            self.error(
                mark,
                path,
                format!("a `{scheme}` URL names an absolute socket path: `{scheme}:///path/to/socket.sock/{{function.name}}`"),
            );
            return;
        }
        let mut s = url;
        while let Some(open) = s.find('{') {
            let after = &s[open..];
            let Some(close) = after.find('}') else {
                self.error(mark, path, "unclosed `{` in the URL template");
                return;
            };
            let placeholder = &after[..=close];
            if placeholder != "{function.name}" {
                self.error(
                    mark,
                    path,
                    format!("unknown placeholder `{placeholder}`; only `{{function.name}}` is supported"),
                );
                return;
            }
            s = &after[close + 1..];
        }
    }

    fn timeouts(&mut self, node: &Node, path: &str, t: &mut HttpTransport) {
        let Some(o) = self.obj(node, path, &["call", "connect", "read", "write"]) else {
            return;
        };
        if let Some(d) = self.opt_duration(&o, "call") {
            t.call_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "connect") {
            t.connect_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "read") {
            t.read_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "write") {
            t.write_timeout = d;
        }
    }

    fn transport(&mut self, node: &Node, path: &str, t: &mut HttpTransport) {
        let Some(o) = self.obj(
            node,
            path,
            &[
                "type",
                "call",
                "connect",
                "timeouts",
                "pool_ttl",
                "pool_size",
                "payload_max_bytes",
                "trust_cacerts",
                "client_cert",
                "client_key",
                "client_key_password",
            ],
        ) else {
            return;
        };
        if let Some(n) = o.get("type") {
            let types = [
                "io.statefun.transports.v1/async",
                "io.statefun.transports.v1/okhttp",
            ];
            if let Some(ty) = self.choice(n, &o.field("type"), "transport type", &types) {
                if ty == types[0] {
                    t.kind = TransportType::Async;
                    t.call_timeout = Duration::from_secs(120);
                    t.connect_timeout = Duration::from_secs(20);
                }
            }
        }
        if let Some(n) = o.get("timeouts") {
            self.timeouts(n, &o.field("timeouts"), t);
        }
        if let Some(d) = self.opt_duration(&o, "call") {
            t.call_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "connect") {
            t.connect_timeout = d;
        }
        if let Some(d) = self.opt_duration(&o, "pool_ttl") {
            t.pool_ttl = d;
        }
        t.pool_size = usize::try_from(self.opt_uint(&o, "pool_size", t.pool_size as u64, 1))
            .unwrap_or(usize::MAX);
        t.payload_max_bytes =
            usize::try_from(self.opt_uint(&o, "payload_max_bytes", t.payload_max_bytes as u64, 1))
                .unwrap_or(usize::MAX);
        t.tls.trust_cacerts = self.opt_str(&o, "trust_cacerts");
        t.tls.client_cert = self.opt_str(&o, "client_cert");
        t.tls.client_key = self.opt_str(&o, "client_key");
        t.tls.client_key_password = self.opt_str(&o, "client_key_password").map(Secret::new);
        if t.tls.client_cert.is_some() != t.tls.client_key.is_some() {
            self.error(
                o.mark,
                path,
                "`client_cert` and `client_key` must be given together",
            );
        }
    }
}
