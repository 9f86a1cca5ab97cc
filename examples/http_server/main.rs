//! A real threaded HTTP/1.1 server whose handlers read the current request, user and app from
//! context locals, several calls deep, without them being passed down.
//!
//! `cargo run --example http_server` starts it on a free loopback port, sends it a few requests
//! from concurrent clients, prints what came back, and shuts it down.
//! `cargo run --example http_server -- serve 127.0.0.1:8080` keeps it running; then try
//! `curl -H 'X-User: ada' -H 'X-Request-Id: r1' http://127.0.0.1:8080/whoami`.

mod server;

use server::{get, Server};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let addr = args.get(1).map_or("127.0.0.1:8080", String::as_str);
        let server = Server::start(addr, 4)?;
        println!("listening on http://{} (Ctrl-C to stop)", server.addr());
        loop {
            std::thread::park();
        }
    }

    // `/panic` panics on purpose (the server answers 500 and cleans up): say so in one line.
    std::panic::set_hook(Box::new(|info| eprintln!("(a handler panicked: {info})")));
    let server = Server::start("127.0.0.1:0", 4)?;
    let addr = server.addr();
    println!("serving on http://{addr} with 4 workers\n");
    let clients: Vec<_> = [
        ("ada", "/whoami"),
        ("grace", "/admin"),
        ("linus", "/"),
        ("ken", "/nope"),
        ("bob", "/panic"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (user, path))| {
        std::thread::spawn(move || {
            let id = format!("req-{i}");
            let (status, body) =
                get(addr, path, &[("X-Request-Id", &id), ("X-User", user)]).unwrap();
            format!("GET {path} as {user} ({id}) -> {status}\n{}", indent(&body))
        })
    })
    .collect();
    for c in clients {
        println!("{}", c.join().unwrap());
    }
    let reports = server.shutdown();
    let handled: u64 = reports.iter().map(|r| r.handled).sum();
    let clean = reports.iter().all(|r| !r.leftovers);
    println!("shut down: {handled} requests handled, workers' own contexts clean: {clean}");
    Ok(())
}

fn indent(body: &str) -> String {
    body.lines().map(|l| format!("    {l}\n")).collect()
}
