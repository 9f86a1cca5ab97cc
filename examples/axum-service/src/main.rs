//! Runs the axum example service.
//!
//! - `cargo run -p context-local-axum-example` (or `-- serve [ADDR]`) serves on
//!   `127.0.0.1:3000` (or `ADDR`) until Ctrl-C; try
//!   `curl -H 'x-request-id: r1' -H 'x-user: ada' -i http://127.0.0.1:3000/report`.
//! - `cargo run -p context-local-axum-example -- selftest [N]` starts it on a free loopback
//!   port, sends it `N` (default 200) concurrent requests, checks that every reply carries only
//!   its own request's values, shuts it down and exits (non-zero on any failure).
//! - `cargo run -p context-local-axum-example -- chain [A_ADDR [B_ADDR]]` serves the two
//!   chained services (`chain` module) on `127.0.0.1:3000` and `127.0.0.1:3001` until Ctrl-C;
//!   try `curl -H 'x-tenant: acme corp' -H 'x-request-id: r1' http://127.0.0.1:3000/chain`.
//! - `cargo run -p context-local-axum-example -- chain-selftest [N]` starts both on free
//!   loopback ports, sends A `N` (default 100) concurrent chained requests with tricky tenants,
//!   checks that B saw exactly A's values for each, sends B a hostile `baggage` header, shuts
//!   both down and exits (non-zero on any failure).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use context_local::tracing::ContextFieldsExt;
use context_local_axum_example::chain::{
    check_chain, hostile_baggage, tricky_request_id, tricky_tenant, Chain, RequestId, Tenant,
    BAGGAGE_ERROR, BAGGAGE_ERRORS, HOSTILE_ERRORS, X_REQUEST_ID, X_TENANT,
};
use context_local_axum_example::{check, client, log_fields, Request, Server, REQUEST, SCRATCH};

const USAGE: &str = "usage: context-local-axum-example [serve [ADDR] | selftest [N] | \
                     chain [A_ADDR [B_ADDR]] | chain-selftest [N]]";
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
        ["chain"] => chain("127.0.0.1:3000", "127.0.0.1:3001"),
        ["chain", a] => chain(a, "127.0.0.1:0"),
        ["chain", a, b] => chain(a, b),
        ["chain-selftest"] => chain_selftest(100),
        ["chain-selftest", n] => match n.parse() {
            Ok(n) if n > 0 && n <= 10_000 => chain_selftest(n),
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
    // One line: every event logged for a request carries its `request_id` and `user`.
    tracing_subscriber::fmt()
        .with_context_fields(&log_fields())
        .init();
    let server =
        Server::start(addr, WORKERS).map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    println!(
        "listening on http://{} with {WORKERS} workers (Ctrl-C to stop)\n\
         try: curl -i -H 'x-request-id: r1' -H 'x-user: ada' http://{}/report",
        server.addr(),
        server.addr()
    );
    ctrl_c()?;
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

/// Waits for Ctrl-C.
fn ctrl_c() -> Result<(), String> {
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    signals
        .block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))
}

fn chain(a: &str, b: &str) -> Result<(), String> {
    let chain =
        Chain::start(a, b, WORKERS).map_err(|e| format!("cannot serve on {a}, {b}: {e}"))?;
    let (a, b) = (chain.a.addr(), chain.b.addr());
    println!(
        "service A on http://{a}, calling service B on http://{b} ({WORKERS} workers each; \
         Ctrl-C to stop)\n\
         try: curl -i -H 'x-tenant: acme corp' -H 'x-request-id: r1' http://{a}/chain\n\
         or B alone: curl -i -H 'baggage: tenant=acme%20corp,request-id=r1,oops' http://{b}/whoami"
    );
    ctrl_c()?;
    let handled = (chain.a.stats().handled(), chain.b.stats().handled());
    let (took_a, took_b) = chain
        .shutdown(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    println!(
        "shut down in {took_a:?} (A, {} requests) and {took_b:?} (B, {} requests)",
        handled.0, handled.1
    );
    Ok(())
}

fn chain_selftest(n: usize) -> Result<(), String> {
    let chain = Chain::start("127.0.0.1:0", "127.0.0.1:0", WORKERS).map_err(|e| e.to_string())?;
    let (a, b) = (chain.a.addr(), chain.b.addr());
    println!(
        "service A on http://{a} calls service B on http://{b} ({WORKERS} workers each); \
         sending A {n} concurrent chained requests"
    );
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let replies = clients.block_on(async {
        let fire = async {
            let tasks: Vec<_> = (0..n)
                .map(|i| {
                    let (tenant, id) = (tricky_tenant(i), tricky_request_id(i));
                    tokio::spawn(async move {
                        let headers = [(X_TENANT, &*tenant), (X_REQUEST_ID, &*id)];
                        let reply = client::get(a, "/chain", &headers).await;
                        (tenant, id, reply)
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
    for (tenant, id, reply) in &replies {
        let checked = reply
            .as_ref()
            .map_err(|e| format!("{id}: {e}"))
            .and_then(|reply| check_chain(reply, tenant, id));
        match checked {
            Ok(checked) => places += checked.places,
            Err(e) => failures.push(e),
        }
    }
    if let Some((tenant, _, Ok(reply))) = replies.get(5) {
        let sent = reply.body.lines().find_map(|l| l.strip_prefix("a.sent: "));
        println!(
            "e.g. tenant {tenant:?} travelled as: baggage: {}",
            sent.unwrap_or("?")
        );
    }

    let hostile = hostile_baggage();
    let headers: Vec<(&str, &str)> = hostile.iter().map(|h| ("baggage", h.as_str())).collect();
    let hostile_reply = clients
        .block_on(client::get(b, "/whoami", &headers))
        .map_err(|e| format!("B did not answer a hostile baggage header: {e}"))?;
    let valid = r#"deep: tenant="hostile but valid" request-id="survivor""#;
    let applied = hostile_reply.status == 200 && hostile_reply.body.lines().any(|l| l == valid);
    let errors: Vec<&str> = hostile_reply
        .headers
        .iter()
        .filter(|(name, _)| name == BAGGAGE_ERROR)
        .map(|(_, v)| v.as_str())
        .collect();
    let count = hostile_reply.header(BAGGAGE_ERRORS).unwrap_or("none");

    // While still serving: every request's contexts are gone (allow a moment for the last
    // blocking job's).
    let counts = || (Tenant::local().contexts(), RequestId::local().contexts());
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts() != (0, 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let serving = counts();
    let dirty = (chain.a.stats().dirty_parks(), chain.b.stats().dirty_parks());
    let (took_a, took_b) = chain
        .shutdown(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;

    println!(
        "{} of {n} chained replies: B saw exactly A's tenant and request id, everywhere \
         ({places} places checked), no baggage errors",
        n - failures.len()
    );
    println!(
        "hostile baggage straight to B: valid members applied: {applied}; {count} problems \
         reported:"
    );
    for error in &errors {
        println!("  {error}");
    }
    println!(
        "contexts holding Tenant / RequestId once all replies were in: {} / {}; workers idle \
         with a value bound: {} (A) / {} (B)",
        serving.0, serving.1, dirty.0, dirty.1
    );
    println!("graceful shutdown took {took_a:?} (A) and {took_b:?} (B)");
    if let Some(first) = failures.first() {
        return Err(format!(
            "{} replies were wrong; the first:\n{first}",
            failures.len()
        ));
    }
    if !applied || errors.len() != HOSTILE_ERRORS || count != HOSTILE_ERRORS.to_string() {
        return Err(format!(
            "the hostile header was mishandled:\n{hostile_reply:?}"
        ));
    }
    if serving != (0, 0) || dirty != (0, 0) {
        return Err("request values were left behind".to_string());
    }
    println!("chain self-test passed");
    Ok(())
}
