//! Helpers shared by the integration tests: endpoints, and calling through
//! `RemoteInvoker::submit` / `drain_completed` with a waker, as the engine does.

#![allow(dead_code)]

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use statefun_module::{EndpointVersion, FunctionPattern, HttpEndpoint, HttpTransport};
use statefun_remote::{RemoteError, RemoteInvoker};
use statefun_sdk::proto::request_reply::ToFunction;
use statefun_sdk::TypeName;

/// An endpoint for `pattern` at `url` with the default transport, shortened by `tweak`.
pub fn endpoint(pattern: &str, url: &str, tweak: impl FnOnce(&mut HttpTransport)) -> HttpEndpoint {
    let mut transport = HttpTransport {
        call_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        ..HttpTransport::default()
    };
    tweak(&mut transport);
    HttpEndpoint {
        functions: FunctionPattern::parse(pattern).expect("valid pattern"),
        url_path_template: url.to_string(),
        max_num_batch_requests: 10,
        version: EndpointVersion::V2,
        transport,
    }
}

pub fn tn(s: &str) -> TypeName {
    TypeName::parse(s).expect("valid type name")
}

/// A `RemoteInvoker` whose waker signals a channel, like the engine's activator.
pub struct Harness {
    pub invoker: RemoteInvoker,
    woken: Receiver<()>,
    next_ticket: Mutex<u64>,
}

impl Harness {
    pub fn new(endpoints: &[HttpEndpoint]) -> Harness {
        let (tx, woken) = channel();
        let tx = Mutex::new(tx);
        let waker: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            let _ = tx.lock().map(|t| t.send(()));
        });
        Harness {
            invoker: RemoteInvoker::new(endpoints, waker).expect("invoker"),
            woken,
            next_ticket: Mutex::new(0),
        }
    }

    /// Submits and waits (at most `limit`) for this ticket's completion.
    pub fn call(
        &self,
        function: &str,
        request: ToFunction,
        limit: Duration,
    ) -> Result<Vec<u8>, RemoteError> {
        let ticket = {
            let mut t = self.next_ticket.lock().expect("ticket lock");
            *t += 1;
            *t
        };
        self.invoker.submit(ticket, &tn(function), request);
        let deadline = std::time::Instant::now() + limit;
        let mut done = Vec::new();
        loop {
            self.invoker.drain_completed(&mut done);
            if let Some(i) = done.iter().position(|(t, _)| *t == ticket) {
                return done.swap_remove(i).1;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "ticket {ticket} did not complete within {limit:?}"
            );
            let _ = self.woken.recv_timeout(left);
        }
    }
}
