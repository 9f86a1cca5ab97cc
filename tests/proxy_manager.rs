//! `LocalProxy` and `LocalManager` through the facade.

mod common;

use common::{expect_panic, Tally};
use context_local::{Local, LocalManager, LocalProxy, LocalStack, Release};
use std::thread;

#[derive(Clone, Debug, PartialEq)]
struct Request {
    id: u64,
    user: Option<String>,
}

static REQUESTS: LocalStack<Request> = LocalStack::named("REQUESTS");
static REQUEST: LocalProxy<Request> = REQUESTS.proxy();
static USER: LocalProxy<Request, Option<String>> = REQUESTS.proxy().map(|r| &r.user);
const REQUEST_ID: LocalProxy<Request, u64> = REQUESTS.proxy().map(|r| &r.id);

static NAME: Local<String> = Local::named("NAME");
static NAME_PROXY: LocalProxy<String> = NAME.proxy();
static NAME_STR: LocalProxy<String, str> = NAME.proxy().map(String::as_str);

#[test]
fn a_stack_proxy_forwards_to_the_top_and_projects() {
    assert!(!REQUEST.is_bound());
    assert_eq!(REQUEST.get(), None);
    let err = REQUEST_ID.try_with(|id| *id).unwrap_err();
    assert_eq!(err.name(), "REQUESTS");
    let msg = expect_panic(|| REQUEST.with(|r| r.id));
    assert!(
        msg.contains("`REQUESTS`") && msg.contains("not bound"),
        "{msg}"
    );
    REQUESTS.scope(Request { id: 1, user: None }, || {
        assert_eq!(REQUEST_ID.get(), Some(1));
        REQUESTS.scope(
            Request {
                id: 2,
                user: Some("ada".into()),
            },
            || {
                assert_eq!(REQUEST_ID.get(), Some(2));
                assert_eq!(USER.get(), Some(Some("ada".into())));
            },
        );
        assert_eq!(USER.get(), Some(None));
    });
    assert!(!REQUEST.is_bound());
}

#[test]
fn a_local_proxy_forwards_debug_and_display() {
    thread::spawn(|| {
        assert_eq!(format!("{NAME_PROXY}"), "<unbound NAME>");
        assert_eq!(format!("{NAME_PROXY:?}"), "<unbound NAME>");
        NAME.set("ada".into());
        assert_eq!(format!("{NAME_PROXY}"), "ada");
        assert_eq!(format!("{NAME_PROXY:?}"), "\"ada\"");
        assert_eq!(
            format!("{NAME_STR:>5}"),
            "  ada",
            "format flags pass through"
        );
        assert_eq!(NAME_STR.with(str::len), 3);
        let copy = NAME_PROXY; // Copy
        assert_eq!(copy.get(), NAME_PROXY.get());
        NAME.with_mut(|_| assert_eq!(format!("{NAME_PROXY}"), "<borrowed NAME>"));
    })
    .join()
    .unwrap();
}

#[test]
fn a_proxy_of_an_initialised_local_is_bound() {
    static COUNT: Local<u32> = Local::with_init("COUNT", || 7);
    static P: LocalProxy<u32> = COUNT.proxy();
    assert!(P.is_bound());
    assert_eq!(P.get(), Some(7));
}

#[test]
fn the_manager_releases_every_local_at_the_end_of_a_request() {
    static A: Local<common::Counted> = Local::named("A");
    static B: LocalStack<common::Counted> = LocalStack::named("B");
    let t = Tally::new();
    let manager = LocalManager::new([&A as &dyn Release, &B]);
    assert_eq!(format!("{manager:?}"), r#"["A", "B"]"#);
    manager.scope(|| {
        A.set(t.make(1));
        B.push(t.make(2));
        B.push(t.make(3));
    });
    assert_eq!(t.live(), 0);
    let r = std::panic::catch_unwind(|| {
        manager.scope(|| {
            A.set(t.make(4));
            panic!("handler failed");
        })
    });
    assert!(r.is_err());
    assert_eq!(t.live(), 0);
    {
        let _end = manager.guard();
        B.push(t.make(5));
    }
    assert_eq!(t.live(), 0);
    assert_eq!(t.created(), 5);
}

#[test]
fn cleanup_continues_past_a_panicking_drop() {
    static BAD: Local<Bomb> = Local::named("BAD");
    static GOOD: Local<common::Counted> = Local::named("GOOD");
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }
    let t = Tally::new();
    let manager = LocalManager::new([&BAD as &dyn Release, &GOOD]);
    BAD.set(Bomb);
    GOOD.set(t.make(1));
    let msg = expect_panic(|| manager.cleanup());
    assert_eq!(msg, "bomb");
    assert_eq!(t.live(), 0, "GOOD was released despite BAD's panic");
    assert!(
        !BAD.is_set(),
        "BAD's entry is gone even though its Drop panicked"
    );
    BAD.set(Bomb);
    std::mem::forget(BAD.take());
}

#[test]
fn a_thread_pool_worker_does_not_leak_one_jobs_context_into_the_next() {
    static JOB: Local<u64> = Local::named("JOB");
    let manager = LocalManager::new([&JOB as &dyn Release]);
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let worker = thread::spawn(move || {
        let mut seen_stale = 0;
        for job in rx {
            if JOB.is_set() {
                seen_stale += 1;
            }
            manager.scope(|| JOB.set(job));
        }
        seen_stale
    });
    for j in 0..100 {
        tx.send(j).unwrap();
    }
    drop(tx);
    assert_eq!(worker.join().unwrap(), 0);
}
