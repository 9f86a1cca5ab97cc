//! Explicit-only locals (`Local::explicit_only`, `LocalStack::explicit_only`,
//! `#[context_local(explicit_only)]`, `context_stack!(#[explicit_only] ..)`), the messages of
//! unbound accesses that say where the code runs, and `thread::bound_in_own_context`.
//!
//! Every wrong wiring is shown twice: with an explicit-only local it fails loudly at the first
//! binding; with a plain local (the control) it keeps its documented behaviour — the value lands
//! in the thread's own context and the next work on that thread sees it.
//!
//! Each test has its own statics, so counts are not disturbed by tests running in parallel.

mod common;

use std::pin::pin;
use std::task::Poll;

use common::poll::{block_on, poll_once, yield_now};
use common::{expect_panic, panic_location, Counted, Tally};
use context_local::{
    context_local, context_stack, thread, AccessErrorKind, Context, FutureExt, Local, LocalStack,
    Snapshot,
};

/// What every refusal says: the local, that the context is the thread's own, and the fixes.
fn assert_teaches(msg: &str, name: &str) {
    for part in [
        &format!("`{name}` is explicit-only") as &str,
        "this thread's own",
        "ContextLayer",
        "in_new_context()",
        "Context::new().run(..)",
    ] {
        assert!(msg.contains(part), "missing {part:?} in: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Local: refused in a thread's own context, at the caller's line, with nothing left behind.

#[test]
fn set_in_a_threads_own_context_panics_at_the_callers_line_and_drops_the_value_once() {
    static REQ: Local<Counted> = Local::named("REQ").explicit_only();
    let t = Tally::new();
    let (file, line) = panic_location(|| REQ.set(t.make(1)));
    assert_eq!((file.as_str(), line), (file!(), line!() - 1));
    assert_teaches(&expect_panic(|| REQ.set(t.make(2))), "REQ");
    assert!(!REQ.is_set());
    assert_eq!(REQ.contexts(), 0);
    assert_eq!(
        (t.created(), t.dropped()),
        (2, 2),
        "each refused value dropped once"
    );
    assert!(thread::bound_in_own_context().is_empty());
}

#[test]
fn replace_with_mut_and_lazy_init_are_refused_there_too_reads_see_it_unbound() {
    static PLAIN: Local<u32> = Local::named("PLAIN").explicit_only();
    static LAZY: Local<Vec<u32>> = Local::with_init("LAZY", Vec::new).explicit_only();

    let (file, line) = panic_location(|| PLAIN.replace(1));
    assert_eq!((file.as_str(), line), (file!(), line!() - 1));
    let (_, line) = panic_location(|| PLAIN.with_mut(|v| *v += 1));
    assert_eq!(line, line!() - 1);
    assert_teaches(&expect_panic(|| PLAIN.with_mut(|v| *v += 1)), "PLAIN");
    // Lazy initialisation would bind the initial value here: refused, by every accessor.
    let (_, line) = panic_location(|| LAZY.with(Vec::len));
    assert_eq!(line, line!() - 1);
    assert_teaches(&expect_panic(|| LAZY.with_mut(|v| v.push(1))), "LAZY");

    let kind = |r: Result<(), context_local::AccessError>| r.unwrap_err().kind();
    assert_eq!(
        kind(PLAIN.try_with_mut(|_| ())),
        AccessErrorKind::ExplicitOnly
    );
    assert_eq!(kind(LAZY.try_with(|_| ())), AccessErrorKind::ExplicitOnly);
    assert_eq!(
        kind(LAZY.try_with_mut(|_| ())),
        AccessErrorKind::ExplicitOnly
    );
    let err = LAZY.try_with(|_| ()).unwrap_err();
    assert_eq!(err.name(), "LAZY");
    assert_teaches(&err.to_string(), "LAZY");

    // Reads: unbound, as for any local nobody bound.
    assert_eq!(kind(PLAIN.try_with(|_| ())), AccessErrorKind::Unbound);
    assert_eq!(PLAIN.get(), None);
    assert_eq!(
        LAZY.get(),
        None,
        "get does not bind the initial value there"
    );
    assert!(!PLAIN.is_set() && !LAZY.is_set());
    assert_eq!((PLAIN.take(), LAZY.take()), (None, None));
    PLAIN.release();
    assert_eq!(PLAIN.contexts() + LAZY.contexts(), 0);
    // A proxy of the lazy local does not claim a value it cannot produce here.
    static LAZY_PROXY: context_local::LocalProxy<Vec<u32>> = LAZY.proxy();
    assert!(!LAZY_PROXY.is_bound());
    assert!(Context::new().run(|| LAZY_PROXY.is_bound()));
}

#[test]
fn unbound_read_of_an_explicit_only_local_in_a_threads_own_context_says_so() {
    static REQ: Local<u32> = Local::named("REQ").explicit_only();
    let msg = expect_panic(|| REQ.with(|v| *v));
    assert!(msg.contains("`REQ` is not bound"), "{msg}");
    assert!(msg.contains("this thread's own"), "{msg}");
    assert!(msg.contains("`REQ` is explicit-only"), "{msg}");
    assert!(msg.contains("ContextLayer"), "{msg}");
}

#[test]
fn in_every_explicit_context_it_is_a_plain_local() {
    static REQ: Local<Counted> = Local::named("REQ").explicit_only();
    static LAZY: Local<u32> = Local::with_init("LAZY", || 5).explicit_only();
    let t = Tally::new();

    let ctx = Context::new();
    ctx.run(|| {
        REQ.set(t.make(1));
        assert_eq!(REQ.replace(t.make(2)).map(|c| c.n), Some(1));
        REQ.with_mut(|c| c.n += 10);
        LAZY.with_mut(|v| *v += 1);
    });
    assert_eq!(ctx.run(|| REQ.with(|c| c.n)), 12);
    assert_eq!(ctx.run(|| LAZY.get()), Some(6));
    let guard = ctx.enter();
    REQ.set(t.make(3));
    drop(guard);
    assert!(!REQ.is_set());
    assert_eq!(REQ.contexts(), 1);
    drop(ctx);

    // A task context.
    let got = block_on(
        async {
            REQ.set(t.make(4));
            yield_now().await;
            REQ.with(|c| c.n)
        }
        .in_new_context(),
    );
    assert_eq!(got, 4);
    // A fork, and a thread started in one.
    assert_eq!(
        Snapshot::empty().run(|| {
            REQ.set(t.make(5));
            REQ.with(|c| c.n)
        }),
        5
    );
    let n = thread::spawn(move || {
        REQ.set(t.make(6));
        REQ.with(|c| c.n)
    })
    .join()
    .unwrap();
    assert_eq!(n, 6);
    assert_eq!(REQ.contexts(), 0);
}

#[test]
fn scopes_bind_it_anywhere_and_end_by_themselves() {
    static REQ: Local<Counted> = Local::named("REQ").explicit_only();
    static SPANS: LocalStack<&str> = LocalStack::named("SPANS").explicit_only();
    let t = Tally::new();

    // In the thread's own context: a scope, and `with_mut` on the value it bound.
    let n = REQ.scope(t.make(1), || {
        REQ.with_mut(|c| c.n += 1);
        assert_eq!(thread::bound_in_own_context(), ["REQ"]);
        REQ.with(|c| c.n)
    });
    assert_eq!(n, 2);
    assert!(!REQ.is_set());
    assert_eq!(SPANS.scope("handler", || SPANS.top()), Some("handler"));
    SPANS.scope("a", || SPANS.with_top_mut(|s| *s = "b"));
    assert!(SPANS.is_empty());

    // A scoped future polled in the thread's own context (no `InContext`), across `.await`.
    let fut = REQ.scope_future(t.make(3), async {
        yield_now().await;
        SPANS
            .scope_future("db", async {
                yield_now().await;
                (REQ.with(|c| c.n), SPANS.top())
            })
            .await
    });
    assert_eq!(block_on(fut), (3, Some("db")));
    assert!(!REQ.is_set() && SPANS.is_empty());
    assert!(thread::bound_in_own_context().is_empty());
    assert_eq!(t.live(), 0);
}

// ---------------------------------------------------------------------------------------------
// LocalStack.

#[test]
fn push_and_enter_are_refused_in_a_threads_own_context() {
    static SPANS: LocalStack<Counted> = LocalStack::named("SPANS").explicit_only();
    let t = Tally::new();
    let (file, line) = panic_location(|| SPANS.push(t.make(1)));
    assert_eq!((file.as_str(), line), (file!(), line!() - 1));
    assert_teaches(&expect_panic(|| SPANS.push(t.make(2))), "SPANS");
    // A guard is not a binding that ends by itself (it can be kept, forgotten, or held across
    // `.await`): refused like `push`.
    let (_, line) = panic_location(|| SPANS.enter(t.make(3)));
    assert_eq!(line, line!() - 1);
    assert!(SPANS.is_empty());
    assert_eq!(SPANS.pop().map(|c| c.n), None);
    assert_eq!((t.created(), t.dropped()), (3, 3));

    Context::new().run(|| {
        SPANS.push(t.make(4));
        let g = SPANS.enter(t.make(5));
        assert_eq!(SPANS.len(), 2);
        drop(g);
        assert_eq!(SPANS.pop().map(|c| c.n), Some(4));
    });
    assert_eq!(t.live(), 0);
}

/// Regression (round 3, no fault found): every write entry point of an explicit-only local and
/// stack (`set`, `replace`, `with_mut`, `try_with_mut`, an initializer run by `with`, `push`,
/// `enter`, a proxy) is refused in a thread's own context and binds nothing there; inside a
/// scope, writes in place go to the scoped value, which ends with the scope.
#[test]
fn explicit_only_refused_by_every_write_entry_point_in_a_threads_own_context() {
    static L: Local<u32> = Local::named("L").explicit_only();
    static D: Local<u32> = Local::with_init("D", || 5).explicit_only();
    static S: LocalStack<u32> = LocalStack::named("S").explicit_only();
    assert!(!expect_panic(|| L.set(1)).is_empty());
    assert!(!expect_panic(|| L.replace(1)).is_empty());
    assert!(!expect_panic(|| L.with_mut(|_| ())).is_empty());
    assert!(L.try_with_mut(|_| ()).is_err());
    assert!(!expect_panic(|| D.with(|_| ())).is_empty());
    assert!(D.try_with(|_| ()).is_err());
    assert_eq!(D.get(), None);
    assert!(!D.is_set());
    assert!(!expect_panic(|| S.push(1)).is_empty());
    assert!(!expect_panic(|| S.enter(1)).is_empty());
    assert!(D.proxy().try_with(|_| ()).is_err());
    assert!(!format!("{}", D.proxy()).is_empty());
    assert!(thread::bound_in_own_context().is_empty());
    // Inside a scope the value is bound; writes in place are to the scoped value, which ends.
    L.scope(1, || {
        L.with_mut(|v| *v = 2);
        assert_eq!(L.take(), Some(2));
        assert!(!expect_panic(|| L.set(3)).is_empty());
    });
    assert!(!L.is_set());
    S.scope(1, || {
        S.with_top_mut(|v| *v = 2);
        assert_eq!(S.pop(), Some(2));
        assert!(!expect_panic(|| S.push(3)).is_empty());
    });
    assert!(S.is_empty());
    assert!(thread::bound_in_own_context().is_empty());
}

/// Regression (round 3): an explicit-only stack's scope future, polled first in an explicit
/// context and next in a thread's own, put its set-aside segment back there, so what the inner
/// future had pushed above the scope's element stayed in the thread's own context after the
/// scope ended. The fix refuses that poll like a `push` there, naming the stack: nothing is
/// left in the thread's own context, the future still completes when polled in an explicit
/// context, and every value is dropped once.
#[test]
fn stack_scope_future_carries_no_explicit_only_element_into_a_threads_own_context() {
    static S: LocalStack<Counted> = LocalStack::named("S").explicit_only();
    let t = Tally::new();
    let c1 = Context::new();
    let t2 = t.clone();
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        S.push(t2.make(1)); // fine: polled in an explicit context
        yield_now().await;
        S.len()
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    // Second poll in the thread's own context, where S can never be pushed onto.
    let msg = expect_panic(|| poll_once(fut.as_mut()));
    assert!(
        msg.contains("`S` is explicit-only") && msg.contains("this thread's own"),
        "{msg}"
    );
    assert!(
        thread::bound_in_own_context().is_empty() && S.is_empty(),
        "an explicit-only element stayed in the thread's own context: {:?}, len {}",
        thread::bound_in_own_context(),
        S.len()
    );
    // Still usable where it belongs: polled to the end in an explicit context.
    assert_eq!(c1.run(|| poll_once(fut.as_mut())), Poll::Ready(2));
    assert_eq!(c1.run(|| S.pop().map(|v| v.n)), Some(1));
    drop(fut);
    assert!(S.is_empty() && thread::bound_in_own_context().is_empty());
    drop(c1);
    assert_eq!(t.live(), 0);
}

/// Control (of the test above): a plain stack's scope future may carry what it pushed into
/// whatever context polls it, a thread's own included.
#[test]
fn control_a_plain_stack_scope_future_carries_its_pushes_into_a_threads_own_context() {
    static S: LocalStack<u8> = LocalStack::named("S");
    let c1 = Context::new();
    let mut fut = pin!(S.scope_future(0, async {
        S.push(1);
        yield_now().await;
        S.len()
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert_eq!(poll_once(fut.as_mut()), Poll::Ready(2));
    assert_eq!(
        S.pop(),
        Some(1),
        "the inner push stays with the last poller"
    );
}

// ---------------------------------------------------------------------------------------------
// Combined with inheritance and baggage.

#[test]
fn combines_with_inheritable_and_baggage() {
    static TENANT: Local<String> = Local::named("TENANT").explicit_only().inheritable();
    static USER: Local<String> = Local::named("USER").inheritable().explicit_only();
    static KEYED: Local<String> = Local::named("KEYED").baggage("keyed").explicit_only();
    static APPS: LocalStack<&str> = LocalStack::named("APPS").inheritable().explicit_only();

    assert_teaches(&expect_panic(|| TENANT.set("acme".into())), "TENANT");
    assert_teaches(&expect_panic(|| USER.set("ada".into())), "USER");
    assert_teaches(&expect_panic(|| KEYED.set("k".into())), "KEYED");
    assert_teaches(&expect_panic(|| APPS.push("shop")), "APPS");
    assert_eq!(KEYED.baggage_key(), Some("keyed"));

    let request = Context::new();
    let seen = request.run(|| {
        TENANT.set("acme".into());
        USER.set("ada".into());
        KEYED.set("k".into());
        APPS.push("shop");
        // Children inherit; their writes are their own.
        Context::child().run(|| {
            let seen = (TENANT.get(), USER.get(), KEYED.get(), APPS.top());
            TENANT.set("child".into());
            seen
        })
    });
    assert_eq!(
        seen,
        (
            Some("acme".into()),
            Some("ada".into()),
            Some("k".into()),
            Some("shop")
        )
    );
    assert_eq!(request.run(|| TENANT.get()).as_deref(), Some("acme"));
    // A plain thread started from the request's context: a fork, so it sees the values...
    let from_thread = request.run(|| thread::spawn(|| TENANT.get()).join().unwrap());
    assert_eq!(from_thread.as_deref(), Some("acme"));
    // ...while a std thread runs in its own context: refused there.
    let refused = std::thread::spawn(|| TENANT.set("x".into())).join();
    assert!(refused.is_err());
}

/// Regression (round 3, no fault found): a capture (`Snapshot::run`) and `thread::spawn` inside
/// a scope in a thread's own context give explicit contexts: an inherited explicit-only value
/// is a plain local there, and nothing comes back into the thread's own context.
#[test]
fn explicit_only_inherited_into_children_of_a_scope_in_a_threads_own_context() {
    static L: Local<String> = Local::named("L").explicit_only().inheritable();
    let (snap, spawned) = L.scope("acme".into(), || {
        let snap = Snapshot::capture();
        let h = thread::spawn(|| {
            L.set("child".into());
            L.get()
        });
        (snap, h.join().unwrap())
    });
    assert_eq!(spawned.as_deref(), Some("child"));
    assert_eq!(snap.run(|| L.get()).as_deref(), Some("acme"));
    assert_eq!(
        snap.run(|| {
            L.set("x".into());
            L.get()
        })
        .as_deref(),
        Some("x")
    );
    assert!(!L.is_set());
    assert!(thread::bound_in_own_context().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The macros.

#[context_local(explicit_only)]
#[derive(Clone, Debug, PartialEq)]
struct RequestId(u64);

#[context_local(explicit_only, inherit, default, name = "TENANT_ID")]
#[derive(Clone, Default, Debug, PartialEq)]
struct TenantId(u32);

context_stack! {
    /// Spans of the current request.
    #[explicit_only]
    static MACRO_SPANS: &'static str;
    #[inherit]
    #[explicit_only]
    static MACRO_APPS: &'static str;
}

#[test]
fn the_macros_declare_explicit_only_locals_and_stacks() {
    let (file, line) = panic_location(|| RequestId::set(RequestId(1)));
    assert_eq!((file.as_str(), line), (file!(), line!() - 1));
    assert_teaches(&expect_panic(|| RequestId::set(RequestId(1))), "RequestId");
    assert_teaches(&expect_panic(|| TenantId::with(|t| t.0)), "TENANT_ID");
    assert_eq!(TenantId::get(), None);
    assert_teaches(&expect_panic(|| MACRO_SPANS.push("a")), "MACRO_SPANS");
    assert_teaches(&expect_panic(|| MACRO_APPS.push("a")), "MACRO_APPS");
    assert_eq!(
        RequestId::local().scope(RequestId(2), RequestId::get),
        Some(RequestId(2))
    );

    let got = Context::new().run(|| {
        RequestId::set(RequestId(3));
        TenantId::with_mut(|t| t.0 = 9);
        MACRO_APPS.push("shop");
        MACRO_SPANS.push("handler");
        let child = Context::child().run(|| (TenantId::get(), MACRO_APPS.top(), MACRO_SPANS.top()));
        (RequestId::get(), child)
    });
    assert_eq!(
        got,
        (Some(RequestId(3)), (Some(TenantId(9)), Some("shop"), None))
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong wiring: a task without a context, a plain thread. The axum cases are in
// examples/axum-service/tests/wiring.rs.

/// A multi-thread tokio runtime with one worker, so that consecutive tasks share its thread.
fn one_worker() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap()
}

#[test]
fn a_tokio_task_without_a_context_fails_at_its_first_binding() {
    static REQ: Local<u64> = Local::named("REQ").explicit_only();
    let rt = one_worker();
    // `tokio::spawn` of a plain future: it runs in the worker thread's own context.
    let err = rt
        .block_on(async { tokio::spawn(async { REQ.set(1) }).await })
        .unwrap_err();
    let msg = common::panic_message(err.into_panic());
    assert_teaches(&msg, "REQ");
    assert!(msg.contains("runtime worker"), "names the worker: {msg}");
    assert!(msg.contains("(`tokio-"), "names the thread: {msg}");
    // Given a context, the same task works, and the worker is left clean.
    let ok = rt.block_on(async {
        tokio::spawn(async { REQ.set(2) }.in_new_context())
            .await
            .map_err(|e| e.to_string())
    });
    assert_eq!(ok, Ok(()));
    let left = rt.block_on(async { tokio::spawn(async { thread::bound_in_own_context() }).await });
    assert_eq!(left.unwrap(), Vec::<&str>::new());
}

#[test]
fn control_a_plain_local_in_a_tokio_task_without_a_context_leaks_into_the_next_task() {
    static REQ: Local<u64> = Local::named("REQ");
    let rt = one_worker();
    rt.block_on(async { tokio::spawn(async { REQ.set(1) }).await })
        .unwrap();
    // The documented hazard: the next task on that worker sees the first one's value.
    let (seen, left) = rt
        .block_on(async {
            tokio::spawn(async { (REQ.get(), thread::bound_in_own_context()) }).await
        })
        .unwrap();
    assert_eq!(seen, Some(1));
    assert_eq!(left, ["REQ"], "the debug aid finds it");
}

#[test]
fn a_plain_std_thread_fails_at_its_first_binding_and_a_plain_local_does_not() {
    static REQ: Local<u64> = Local::named("REQ").explicit_only();
    static CONTROL: Local<u64> = Local::named("CONTROL");
    let err = std::thread::spawn(|| REQ.set(1)).join().unwrap_err();
    assert_teaches(&common::panic_message(err), "REQ");
    // Control: a plain local is the thread's own value there, as documented.
    let seen = std::thread::spawn(|| {
        CONTROL.set(1);
        (CONTROL.get(), thread::bound_in_own_context())
    })
    .join()
    .unwrap();
    assert_eq!(seen, (Some(1), vec!["CONTROL"]));
}

// ---------------------------------------------------------------------------------------------
// Messages that teach: unbound reads say which kind of context is current.

#[test]
fn unbound_in_a_child_whose_parent_has_it_bound_names_inherit() {
    static REQ: Local<u32> = Local::named("REQ");
    static TENANT: Local<u32> = Local::named("TENANT").inheritable();
    let parent = Context::new();
    let msg = parent.run(|| {
        REQ.set(1);
        TENANT.set(2); // so that the child has something inherited: a child context
        Context::child().run(|| expect_panic(|| REQ.with(|v| *v)))
    });
    assert!(msg.contains("a child context"), "{msg}");
    assert!(
        msg.contains("is bound in 1 other context but is not inheritable"),
        "{msg}"
    );
    assert!(msg.contains("`inherit`"), "{msg}");
    // The same from a task started in a child context of a parent with nothing inheritable
    // (its child starts empty: an explicit context).
    let bare = Context::new();
    let msg = bare.run(|| {
        REQ.set(1);
        block_on(async { expect_panic(|| REQ.with(|v| *v)) }.in_child_context())
    });
    assert!(msg.contains("an explicit context"), "{msg}");
    assert!(msg.contains("`inherit`"), "{msg}");
    // Control: an inheritable local is seen by the child, and an unbound local bound nowhere
    // gets no such hint.
    static NOWHERE: Local<u32> = Local::named("NOWHERE");
    let msg = parent.run(|| Context::child().run(|| expect_panic(|| NOWHERE.with(|v| *v))));
    assert!(!msg.contains("`inherit`"), "{msg}");
    assert_eq!(
        parent.run(|| Context::child().run(|| TENANT.get())),
        Some(2)
    );
}

#[test]
fn unbound_on_a_runtime_workers_own_context_names_context_layer_and_in_new_context() {
    static REQ: Local<u32> = Local::named("REQ");
    let rt = one_worker();
    let err = rt
        .block_on(async { tokio::spawn(async { REQ.with(|v| *v) }).await })
        .unwrap_err();
    let msg = common::panic_message(err.into_panic());
    assert!(msg.contains("which is this thread's own"), "{msg}");
    assert!(msg.contains("(`tokio-"), "names the thread: {msg}");
    assert!(msg.contains("ContextLayer"), "{msg}");
    assert!(msg.contains("in_new_context()"), "{msg}");
    // Control: on a plain thread an unbound read is just unbound (no wiring advice).
    let msg = std::thread::spawn(|| expect_panic(|| REQ.with(|v| *v)))
        .join()
        .unwrap();
    assert!(msg.contains("which is this thread's own"), "{msg}");
    assert!(!msg.contains("ContextLayer"), "{msg}");
}

#[test]
fn the_try_accessors_say_which_kind_of_context_is_current() {
    static L: Local<u8> = Local::named("L");
    let own = L.try_with(|_| ()).unwrap_err().to_string();
    assert!(own.ends_with("which is this thread's own"), "{own}");
    let explicit = Context::new().run(|| L.try_with(|_| ()).unwrap_err().to_string());
    assert!(explicit.contains("an explicit context"), "{explicit}");
}

// ---------------------------------------------------------------------------------------------
// The debug aid.

#[test]
fn bound_in_own_context_lists_the_own_contexts_values_even_from_an_entered_context() {
    static A: Local<u8> = Local::named("A");
    static B: LocalStack<u8> = LocalStack::named("B");
    static C: Local<u8> = Local::named("C");
    std::thread::spawn(|| {
        assert!(thread::bound_in_own_context().is_empty());
        B.push(1);
        A.set(1);
        Context::new().run(|| {
            C.set(1); // not in the thread's own context
            assert_eq!(thread::bound_in_own_context(), ["B", "A"]);
        });
        B.pop();
        assert_eq!(thread::bound_in_own_context(), ["A"]);
    })
    .join()
    .unwrap();
}

#[test]
fn bound_in_own_context_in_tokio_on_thread_park_finds_a_leaked_request_value() {
    use std::sync::{Arc, Mutex};
    static REQ: Local<u64> = Local::named("REQ");
    let found: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let seen = found.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_park(move || seen.lock().unwrap().extend(thread::bound_in_own_context()))
        .build()
        .unwrap();
    rt.block_on(async { tokio::spawn(async { REQ.set(1) }.in_new_context()).await })
        .unwrap();
    assert!(
        found.lock().unwrap().is_empty(),
        "a task with a context leaves nothing"
    );
    rt.block_on(async { tokio::spawn(async { REQ.set(1) }).await })
        .unwrap();
    drop(rt); // the worker parks after the task, before it is shut down
    assert!(
        found.lock().unwrap().contains(&"REQ"),
        "{:?}",
        found.lock().unwrap()
    );
}
