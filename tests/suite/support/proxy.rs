//! A TCP proxy in front of a PostgreSQL server that forwards the startup exchange and then
//! a chosen number of requests of each connection, and after that either stops
//! forwarding (a server that hangs once connected: its backend frozen, a black hole in
//! the network) or cuts the connection (a server that goes away in the middle of a
//! command). Only loopback addresses are used.
//!
//! Requests are counted on the client's side of the protocol: a simple `Query` or an
//! extended-protocol `Sync` ends one. The proxy reads the client's messages one by one,
//! and withholds the first message of the request after the allowed number.
//!
//! It notes when it accepted each connection ([`Proxy::accepted`]): the attempts of a
//! client the server refuses at once are seen there, and nowhere on the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to a connection once its allowed requests are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing more is forwarded either way; the connection stays open.
    Freeze,
    /// Both sides of the connection are closed.
    Cut,
}

struct Shared {
    stop: AtomicBool,
    /// Requests each new connection may make; `usize::MAX` forwards everything.
    allowed: AtomicUsize,
    then: Mutex<Then>,
    /// Withhold a query (simple or extended) whose text holds these bytes, whatever the
    /// count of requests.
    needle: Mutex<Option<Vec<u8>>>,
    /// Connections withheld so far (frozen or cut).
    withheld: AtomicUsize,
    /// When each connection was accepted, in order.
    accepted: Mutex<Vec<Instant>>,
    sockets: Mutex<Vec<TcpStream>>,
}

/// A proxy listening on 127.0.0.1; stops and closes every connection when dropped.
pub struct Proxy {
    /// The port it listens on.
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream` that forwards everything until told otherwise.
    pub fn to(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            allowed: AtomicUsize::new(usize::MAX),
            then: Mutex::new(Then::Freeze),
            needle: Mutex::new(None),
            withheld: AtomicUsize::new(0),
            accepted: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        s.accepted.lock().unwrap().push(Instant::now());
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        connection(s.clone(), client, server);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, shared }
    }

    /// From now on, each new connection forwards the startup exchange and `requests`
    /// requests, then does `then`.
    pub fn after(&self, requests: usize, then: Then) {
        *self.shared.then.lock().unwrap() = then;
        self.shared.allowed.store(requests, Ordering::SeqCst);
    }

    /// From now on, each new connection forwards everything until it sends a query
    /// whose text holds `needle`, then does `then`.
    pub fn on_query(&self, needle: &str, then: Then) {
        *self.shared.then.lock().unwrap() = then;
        *self.shared.needle.lock().unwrap() = Some(needle.as_bytes().to_vec());
        self.shared.allowed.store(usize::MAX, Ordering::SeqCst);
    }

    /// Forward everything again (connections already withheld stay so).
    pub fn forward_all(&self) {
        *self.shared.needle.lock().unwrap() = None;
        self.shared.allowed.store(usize::MAX, Ordering::SeqCst);
    }

    /// How many connections have been frozen or cut so far.
    pub fn withheld(&self) -> usize {
        self.shared.withheld.load(Ordering::SeqCst)
    }

    /// When it accepted each connection so far, in order.
    pub fn accepted(&self) -> Vec<Instant> {
        self.shared.accepted.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn connection(shared: Arc<Shared>, client: TcpStream, server: TcpStream) {
    {
        let mut sockets = shared.sockets.lock().unwrap();
        sockets.push(client.try_clone().unwrap());
        sockets.push(server.try_clone().unwrap());
    }
    let allowed = shared.allowed.load(Ordering::SeqCst);
    let then = *shared.then.lock().unwrap();
    let needle = shared.needle.lock().unwrap().clone();
    let frozen = Arc::new(AtomicBool::new(false));
    // Server to client: copied as it comes, until the connection is withheld.
    {
        let (mut from, mut to) = (server.try_clone().unwrap(), client.try_clone().unwrap());
        let (frozen, shared) = (frozen.clone(), shared.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if frozen.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            if !frozen.load(Ordering::SeqCst) {
                let _ = to.shutdown(Shutdown::Both);
            }
        });
    }
    // Client to server: message by message, counting requests.
    std::thread::spawn(move || {
        let (mut from, mut to) = (client, server);
        let mut requests = 0usize;
        let mut startup = true;
        loop {
            let message = if startup {
                read_untyped(&mut from)
            } else {
                read_typed(&mut from)
            };
            let Some(message) = message else { break };
            if startup {
                // An SSL or GSS encryption request is followed by the real startup.
                let code = u32::from_be_bytes([message[4], message[5], message[6], message[7]]);
                startup = code == 80877103 || code == 80877104;
            } else if message[0] != b'X'
                && (requests >= allowed
                    || needle.as_ref().is_some_and(|n| {
                        matches!(message[0], b'Q' | b'P')
                            && message.windows(n.len()).any(|w| w == n.as_slice())
                    }))
            {
                shared.withheld.fetch_add(1, Ordering::SeqCst);
                if then == Then::Freeze {
                    // Nothing more goes through, until the client gives the connection up
                    // (then the server's end is closed too, freeing its slot).
                    frozen.store(true, Ordering::SeqCst);
                    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut buf = [0u8; 4096];
                    while !shared.stop.load(Ordering::SeqCst) {
                        match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                }
                break;
            } else if message[0] == b'Q' || message[0] == b'S' {
                requests += 1;
            }
            if to.write_all(&message).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A startup-phase message: a length (counting itself), then the body.
fn read_untyped(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let n = u32::from_be_bytes(len) as usize;
    let mut message = len.to_vec();
    message.resize(n.max(8), 0);
    from.read_exact(&mut message[4..]).ok()?;
    Some(message)
}

/// A message after the startup: a type byte, a length (counting itself), then the body.
fn read_typed(from: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 5];
    from.read_exact(&mut head).ok()?;
    let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut message = head.to_vec();
    message.resize(1 + n.max(4), 0);
    from.read_exact(&mut message[5..]).ok()?;
    Some(message)
}
