//! A TCP proxy that a fault test can take down and bring back.
//!
//! Used where a service cannot be restarted faithfully here: the Kinesis
//! emulator keeps its streams in memory, persists them only when its orderly
//! shutdown completes, and that shutdown never completes while a client keeps
//! a keep-alive connection busy — so a restart either hangs or (after
//! SIGKILL) loses acknowledged records, which the real service never does.
//! What a restart means for a client is kept: every open connection is closed,
//! new ones are refused while it is down, and afterwards the same address
//! serves the same data.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy on `127.0.0.1:<port>` in front of `target`; see the module docs.
pub struct Proxy {
    /// The address clients connect to.
    pub addr: SocketAddr,
    target: SocketAddr,
    state: Arc<State>,
}

struct State {
    up: AtomicBool,
    /// Both ends of every open connection (to close them on [`Proxy::down`]).
    open: Mutex<Vec<TcpStream>>,
    /// Set when the proxy is dropped: the accept loop ends.
    closed: AtomicBool,
}

impl Proxy {
    /// Starts a proxy to `target` on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            up: AtomicBool::new(true),
            open: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let proxy = Proxy {
            addr,
            target,
            state,
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&self, listener: TcpListener) {
        let (state, target) = (self.state.clone(), self.target);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.closed.load(Ordering::SeqCst) || !state.up.load(Ordering::SeqCst) {
                    // Down: the listener is dropped, so connections are refused.
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut open = state.open.lock().unwrap_or_else(|p| p.into_inner());
                    open.push(c);
                    open.push(s);
                }
                pump(&client, &server);
                pump(&server, &client);
            }
        });
    }

    /// Closes every open connection and refuses new ones until [`Proxy::up`].
    pub fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        // Wake the accept loop so it sees `up == false` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let open = std::mem::take(&mut *self.state.open.lock().unwrap_or_else(|p| p.into_inner()));
        for stream in open {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Listens on the same address again.
    pub fn up(&self) -> std::io::Result<()> {
        // The old accept loop may need a moment to drop its listener.
        let mut bound = TcpListener::bind(self.addr);
        for _ in 0..100 {
            if bound.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            bound = TcpListener::bind(self.addr);
        }
        let listener = bound?;
        self.state.up.store(true, Ordering::SeqCst);
        self.serve(listener);
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.down();
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pump(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
