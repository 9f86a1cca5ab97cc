//! Runs the axum example service.
//!
//! - `cargo run -p context-local-axum-example` (or `-- serve [ADDR]`) serves on
//!   `127.0.0.1:3000` (or `ADDR`) until Ctrl-C; try
//!   `curl -H 'x-request-id: r1' -H 'x-user: ada' -i http://127.0.0.1:3000/report`.
//! - `cargo run -p context-local-axum-example -- selftest [N]` starts it on a free loopback
//!   port, sends it `N` (default 200) concurrent requests, checks that every reply carries only
//!   its own request's values, shuts it down and exits (non-zero on any failure).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use context_local_axum_example::{check, client, Request, Server, REQUEST, SCRATCH};

const USAGE: &str = "usage: context-local-axum-example [serve [ADDR] | selftest [N]]";
const WORKERS: usize = 4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        [] | ["serve"] => serve("127.0.0.1:3000"),
        ["serve", addr] => serve(addr),
        ["selftest"] => selftest(200),
        ["selftest", n] => match n.parse() {
            Ok(n) if n > 0 && n <= 10_000 => selftest(n),
            _ => Err(format!("N must be 1..=10000\n{USAGE}")),
        },
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: &str) -> Result<(), String> {
    let server =
        Server::start(addr, WORKERS).map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    println!(
        "listening on http://{} with {WORKERS} workers (Ctrl-C to stop)\n\
         try: curl -i -H 'x-request-id: r1' -H 'x-user: ada' http://{}/report",
        server.addr(),
        server.addr()
    );
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    signals
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    let handled = server.stats().handled();
    let took = server
        .shutdown(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    println!("shut down in {took:?} after {handled} /report requests");
    Ok(())
}

fn selftest(n: usize) -> Result<(), String> {
    let server = Server::start("127.0.0.1:0", WORKERS).map_err(|e| e.to_string())?;
    let addr = server.addr();
    println!("serving on http://{addr} with {WORKERS} workers; sending {n} concurrent requests");

    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let replies = clients.block_on(async {
        let fire = async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let request = Request {
                        id: format!("req-{i}"),
                        user: format!("user-{i}"),
                    };
                    tokio::spawn(async move {
                        let headers = [("x-request-id", &*request.id), ("x-user", &*request.user)];
                        let reply = client::get(addr, "/report", &headers).await;
                        (request, reply)
                    })
                })
                .collect();
            let mut replies = Vec::with_capacity(n);
            for task in tasks {
                replies.push(task.await.map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(replies)
        };
        tokio::time::timeout(Duration::from_secs(60), fire)
            .await
            .map_err(|_| "the clients were not done within 60 s".to_string())?
    })?;

    let mut failures = Vec::new();
    let mut places = 0;
    let mut threads = BTreeSet::new();
    let mut hopped = 0;
    for (request, reply) in &replies {
        let checked = reply
            .as_ref()
            .map_err(|e| format!("{}: {e}", request.id))
            .and_then(|reply| check(reply, request));
        match checked {
            Ok(checked) => {
                places += checked.places;
                let seen: BTreeSet<_> = checked.threads.iter().cloned().collect();
                hopped += usize::from(seen.len() > 1);
                threads.extend(seen);
            }
            Err(e) => failures.push(e),
        }
    }
    let max_in_flight = server.stats().max_in_flight();
    // While still serving: every request's contexts are gone (a rayon job's fork is dropped
    // just after it sent its result, so allow a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut serving = (REQUEST.contexts(), SCRATCH.contexts());
    while serving != (0, 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
        serving = (REQUEST.contexts(), SCRATCH.contexts());
    }
    let dirty_parks = server.stats().dirty_parks();
    let took = server
        .shutdown(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let left = (REQUEST.contexts(), SCRATCH.contexts());

    println!(
        "{} of {n} replies carried only their own request's values ({places} places checked)",
        n - failures.len()
    );
    println!(
        "handlers ran on {} worker threads ({}); {hopped} of {n} requests changed threads \
         mid-request; up to {max_in_flight} handlers in flight at once",
        threads.len(),
        threads.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!(
        "contexts holding REQUEST / SCRATCH once all replies were in: {} / {}, after \
         shutdown: {} / {}; workers idle with a request value bound: {dirty_parks}",
        serving.0, serving.1, left.0, left.1
    );
    println!("graceful shutdown took {took:?}");
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} replies were wrong; the first:\n{first}",
            failures.len()
        ));
    }
    if dirty_parks != 0 || serving != (0, 0) || left != (0, 0) {
        return Err("request values were left behind".to_string());
    }
    println!("self-test passed");
    Ok(())
}
