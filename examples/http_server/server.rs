//! A small HTTP/1.1 server on `std::net` whose handlers read the current request from context
//! locals instead of having it passed down. Shared by `cargo run --example http_server` and the
//! integration test `tests/http_server.rs`.
//!
//! Each connection is handled by a worker of a fixed pool. Every request runs in a fresh
//! `Context`, with a `LocalManager` releasing its locals when the request ends (also when a
//! handler panics), so nothing of one request can be seen by the next one on the same worker.

use context_local::{context_local, context_stack, Context, LocalManager, LocalProxy};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// The request being handled: Flask's `request`.
#[context_local]
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// The server's own sequence number.
    pub(crate) seq: u64,
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The path asked for.
    pub(crate) path: String,
    /// The client's `X-Request-Id` header, if any.
    pub(crate) request_id: Option<String>,
    /// The client's `X-User` header, if any.
    pub(crate) user: Option<String>,
}

/// An application context: Flask's `current_app`, pushed per request (and nested by handlers).
#[derive(Clone, Debug)]
pub(crate) struct App {
    /// The app's name.
    pub(crate) name: &'static str,
}

context_stack! {
    /// The app contexts of the current request, innermost on top.
    pub(crate) static APPS: App;
}

/// Always the innermost app of the current request.
pub(crate) static CURRENT_APP: LocalProxy<App, str> = APPS.proxy().map(|a| a.name);

/// Per-request storage released after every request.
fn manager() -> LocalManager {
    LocalManager::new([Request::local() as _, &APPS as _])
}

// ---------------------------------------------------------------------------------------------
// Handlers: several calls deep, none of them is passed the request.

fn route() -> (u16, String) {
    match Request::with(|r| r.path.clone()).as_str() {
        "/" => (200, views::home()),
        "/whoami" => (200, views::whoami()),
        "/admin" => APPS.scope(App { name: "admin" }, || (200, views::whoami())),
        "/panic" => panic!("handler failed"),
        _ => (
            404,
            Request::with(|r| format!("no page for {} {}\n", r.method, r.path)),
        ),
    }
}

mod views {
    use super::{auth, Request, CURRENT_APP};

    pub(super) fn home() -> String {
        format!("hello from {CURRENT_APP}\n")
    }

    pub(super) fn whoami() -> String {
        format!(
            "request-id: {}\nuser: {}\napp: {}\nseq: {}\n",
            Request::with(|r| r.request_id.clone().unwrap_or_default()),
            auth::current_user(),
            CURRENT_APP,
            Request::with(|r| r.seq),
        )
    }
}

mod auth {
    use super::Request;

    /// Deep in the call stack, the user comes from the request context.
    pub(super) fn current_user() -> String {
        Request::with(|r| r.user.clone()).unwrap_or_else(|| "anonymous".into())
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing.

/// Reads one request's head; `None` on a malformed or empty one.
fn read_request(stream: &TcpStream, seq: u64) -> io::Result<Option<Request>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let mut request = Request {
        seq,
        method: method.into(),
        path: path.into(),
        request_id: None,
        user: None,
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = Some(value.trim().to_string());
            match name.trim().to_ascii_lowercase().as_str() {
                "x-request-id" => request.request_id = value,
                "x-user" => request.user = value,
                _ => {}
            }
        }
    }
    Ok(Some(request))
}

fn respond(mut stream: &TcpStream, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// One connection, one request, in a context of its own.
fn handle(stream: TcpStream, manager: &LocalManager, seq: u64) -> io::Result<()> {
    let Some(request) = read_request(&stream, seq)? else {
        return respond(&stream, 400, "bad request\n");
    };
    let ctx = Context::new();
    let outcome = ctx.run(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            manager.scope(|| {
                Request::set(request);
                APPS.scope(App { name: "shop" }, route)
            })
        }))
    });
    match outcome {
        Ok((status, body)) => respond(&stream, status, &body),
        Err(_) => respond(&stream, 500, "internal error\n"),
    }
}

/// What a worker found in its own thread's context after its last request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WorkerReport {
    /// Requests this worker handled.
    pub(crate) handled: u64,
    /// Whether anything was still bound in the worker's own context at the end.
    pub(crate) leftovers: bool,
}

fn worker(jobs: Arc<Mutex<Receiver<TcpStream>>>, seq: Arc<AtomicU64>) -> WorkerReport {
    let manager = manager();
    let mut report = WorkerReport::default();
    loop {
        let next = jobs.lock().unwrap().recv();
        let Ok(stream) = next else { break };
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let _ = handle(stream, &manager, n);
        report.handled += 1;
    }
    report.leftovers = Request::is_set() || !APPS.is_empty();
    report
}

/// A running server.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
    workers: Vec<JoinHandle<WorkerReport>>,
}

impl Server {
    /// Starts a server on `addr` (port 0 for any free one) with `workers` worker threads.
    pub(crate) fn start(addr: &str, workers: usize) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<TcpStream>();
        let rx = Arc::new(Mutex::new(rx));
        let seq = Arc::new(AtomicU64::new(1));
        let workers = (0..workers)
            .map(|_| {
                let (rx, seq) = (rx.clone(), seq.clone());
                thread::spawn(move || worker(rx, seq))
            })
            .collect();
        let acceptor = {
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        if tx.send(stream).is_err() {
                            break;
                        }
                    }
                }
                // Dropping `tx` lets the workers finish their queue and exit.
            })
        };
        Ok(Server {
            addr,
            stop,
            acceptor,
            workers,
        })
    }

    /// Where the server listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the workers finish queued requests, and joins every thread.
    pub(crate) fn shutdown(self) -> Vec<WorkerReport> {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor blocked in `accept`.
        let _ = TcpStream::connect(self.addr);
        self.acceptor.join().expect("acceptor panicked");
        self.workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    }
}

/// A minimal client: one GET with the given headers; returns the status and body.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
    )?;
    for (name, value) in headers {
        write!(stream, "{name}: {value}\r\n")?;
    }
    write!(stream, "\r\n")?;
    let mut response = String::new();
    io::Read::read_to_string(&mut stream, &mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
