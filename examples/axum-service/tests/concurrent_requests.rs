//! The design's gate "200 concurrent requests through axum + ContextLayer, handlers hopping
//! threads: 0 requests see another's values", over loopback against the real server.
//!
//! One test in this binary on purpose: it checks process-wide counts (`REQUEST.contexts()`)
//! that another test running at the same time would disturb.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use context_local_axum_example::{
    check, client, Request, Server, RAYON_ITEMS, REQUEST, SCRATCH, SEEN_AFTER_HANDLER,
};

const REQUESTS: usize = 200;
const WORKERS: usize = 4;

#[test]
fn two_hundred_concurrent_requests_each_see_only_their_own_values() {
    let server = Server::start("127.0.0.1:0", WORKERS).expect("bind a loopback port");
    let addr = server.addr();

    // The clients: one current-thread runtime, every request on its own connection, all at once.
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let replies = clients.block_on(async {
        let fire = async {
            let tasks: Vec<_> = (0..REQUESTS)
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
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.expect("a client task panicked"));
            }
            replies
        };
        tokio::time::timeout(Duration::from_secs(60), fire)
            .await
            .expect("200 requests took more than 60 s")
    });

    // Every reply: its own id and user in every place, nobody else's; SCRATCH only in the
    // handler's own context.
    let mut handler_threads = BTreeSet::new();
    let mut hopped = 0;
    let mut ids = HashSet::new();
    for (request, reply) in &replies {
        let reply = reply
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", request.id));
        let checked = check(reply, request).unwrap_or_else(|e| panic!("{}: {e}", request.id));
        // handler entry, after awaits, deep, spawn, spawn_blocking, handler end, the outer
        // middleware, and every rayon item.
        assert_eq!(checked.places, 7 + RAYON_ITEMS);
        // Spelled out once more, independently of `check`:
        let own = format!("id={} user={}", request.id, request.user);
        for line in reply.body.lines().skip(1) {
            let (place, seen) = line.split_once(": ").expect("place: observation");
            if place != "threads" {
                assert!(
                    seen.starts_with(&format!("{own} scratch=")),
                    "{place}: {seen}"
                );
            }
        }
        let after = reply.header(SEEN_AFTER_HANDLER).unwrap();
        assert_eq!(after, format!("{own} scratch={}", request.id));

        assert!(checked.threads.iter().all(|t| t.starts_with("rt-")));
        let threads: BTreeSet<_> = checked.threads.into_iter().collect();
        hopped += usize::from(threads.len() > 1);
        handler_threads.extend(threads);
        assert!(ids.insert(request.id.clone()));
    }
    assert_eq!(ids.len(), REQUESTS);

    // They really overlapped and really moved between workers.
    let stats = server.stats().clone();
    assert_eq!(stats.handled(), REQUESTS as u64);
    assert!(
        stats.max_in_flight() > 1,
        "the handlers never overlapped: {stats:?}"
    );
    assert!(
        handler_threads.len() > 1,
        "all handlers ran on one worker: {handler_threads:?}"
    );
    assert!(hopped > 0, "no handler ever resumed on another worker");
    eprintln!(
        "{REQUESTS} replies checked; handlers ran on {:?}; {hopped} requests changed threads \
         mid-request; up to {} in flight",
        handler_threads,
        stats.max_in_flight()
    );

    // A request without headers gets defaults, in its own context too.
    let anonymous = clients.block_on(client::get(addr, "/report", &[])).unwrap();
    assert_eq!(anonymous.status, 200);
    assert!(anonymous.body.contains(" user=anonymous scratch="));
    assert!(!anonymous.body.contains("req-"), "{}", anonymous.body);

    // Every request's contexts are gone while the server still runs (not only when runtime
    // teardown drops the workers' threads): no context anywhere holds a request value. A rayon
    // job's fork is dropped just after the job sent its result, so allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (REQUEST.contexts(), SCRATCH.contexts()) != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "request values still bound in {} / {} contexts",
            REQUEST.contexts(),
            SCRATCH.contexts()
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // Graceful shutdown, within a bound.
    let took = server
        .shutdown(Duration::from_secs(10))
        .expect("a clean shutdown within 10 s");
    assert!(took < Duration::from_secs(10));

    // Nothing left: no worker went idle with a request value in its own context, and no
    // context anywhere (workers', blocking threads', rayon's, tasks') still holds one.
    assert_eq!(stats.dirty_parks(), 0);
    assert_eq!(REQUEST.contexts(), 0);
    assert_eq!(SCRATCH.contexts(), 0);
    // This thread never had one either.
    assert!(!REQUEST.is_set() && !SCRATCH.is_set());
}
