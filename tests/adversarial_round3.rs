//! Adversarial review of round 3 (issues 17-20) as merged: each test attacks one fix or
//! feature the way a careless user or an attacker would, and counts values where they could be
//! lost or dropped twice.

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use common::{expect_panic, Counted, Tally};
use context_local::{thread, Context, Local, LocalStack, Snapshot};

/// Pending once, then ready: a `.await` that gives the executor back.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = TaskContext::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

// ---------------------------------------------------------------------------------------------
// The stack scope future's set-aside segment, moved between contexts.

/// What the inner future pushed above the scope's element travels with the future; polled
/// next in a thread's own context, an explicit-only stack must not end up holding it there
/// (it did: the element stayed in the thread's own context after the scope ended). The poll
/// is refused like a `push` there, naming the stack; every value is dropped once.
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

/// Control: a plain stack's future may carry what it pushed into whatever context polls it.
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

/// A `StackGuard` taken inside a stack scope future (a `!Send` future on a local executor)
/// removes exactly its own element, even when the segment it is in was set aside and put
/// back in another context.
#[test]
fn stack_guard_inside_a_scope_future_polled_in_two_contexts_removes_its_own_element() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let t2 = t.clone();
    // Boxed, to be dropped before the count: a finished scope future keeps its own element
    // (taken back out of the stack) until it is dropped, like tokio's `TaskLocalFuture`.
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        let g = S.enter(t2.make(1));
        yield_now().await;
        drop(g);
        let top = S.with_top(|v| v.n);
        yield_now().await;
        (top, S.len())
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(fut.as_mut())).is_pending());
    let out = c2.run(|| poll_once(fut.as_mut()));
    assert_eq!(out, Poll::Ready((Some(0), 1)), "the guard's element stayed");
    assert_eq!(
        (c1.run(|| S.len()), c2.run(|| S.len())),
        (0, 0),
        "elements left behind"
    );
    drop(fut);
    drop((c1, c2));
    assert_eq!(t.live(), 0);
}

/// A scope future dropped mid-way with elements set aside above its own: each dropped once.
#[test]
fn stack_scope_future_dropped_mid_way_drops_its_set_aside_segment_once() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let c1 = Context::new();
    let t2 = t.clone();
    let fut = Box::pin(S.scope_future(t.make(0), async move {
        S.push(t2.make(1));
        S.push(t2.make(2));
        yield_now().await;
        yield_now().await;
    }));
    let mut fut = fut;
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert_eq!(c1.run(|| S.len()), 0, "set aside between polls");
    let c2 = Context::new();
    c2.run(|| drop(fut));
    // What the future pushed above its element is the future's context's to keep (c2's, where
    // it was dropped); the scope's own element is gone.
    let left = c2.run(|| {
        let mut v = Vec::new();
        while let Some(x) = S.pop() {
            v.push(x.n);
        }
        v
    });
    assert!(!left.contains(&0), "the scope's element stayed: {left:?}");
    drop((c1, c2));
    t.assert_all_dropped();
}

// ---------------------------------------------------------------------------------------------
// Scopes whose context is left: re-entry on another thread.

/// `Local::scope` in an explicit context whose body drops that context's guard while another
/// thread enters the context: the restore is queued for the holder, which (as documented)
/// applies it on its *next* entry; the previous value is never dropped, the scoped one is
/// dropped exactly once.
#[test]
fn scope_left_then_context_held_by_another_thread_restores_there_exactly_once() {
    static L: Local<Counted> = Local::named("L");
    let t = Tally::new();
    let ctx = std::sync::Arc::new(Context::new());
    ctx.run(|| L.set(t.make(1)));
    let (to_worker, rx) = std::sync::mpsc::channel::<()>();
    let (tx, from_worker) = std::sync::mpsc::channel::<()>();
    let worker_ctx = ctx.clone();
    let guard = ctx.enter();
    let worker = std::thread::spawn(move || {
        rx.recv().unwrap();
        // Enter while the scope still runs on the other thread but has left the context.
        let g = worker_ctx.enter();
        let during = L.with(|v| v.n);
        tx.send(()).unwrap();
        rx.recv().unwrap();
        // The scope has ended meanwhile: its restore is queued for us, for our next entry.
        let same_entry = L.with(|v| v.n);
        drop(g);
        let next_entry = worker_ctx.run(|| L.with(|v| v.n));
        (during, same_entry, next_entry)
    });
    L.scope(t.make(2), || {
        drop(guard); // leave the context, as a scheduler switch would
        to_worker.send(()).unwrap();
        from_worker.recv().unwrap();
    });
    to_worker.send(()).unwrap();
    // Observation (documented): the holder keeps seeing the scoped value until it re-enters.
    assert_eq!(worker.join().unwrap(), (2, 2, 1));
    assert_eq!(ctx.run(|| L.with(|v| v.n)), 1);
    assert_eq!(t.live(), 1, "exactly the previous value is still alive");
    drop(ctx);
    assert_eq!(t.live(), 0);
}

// ---------------------------------------------------------------------------------------------
// explicit_only: every write entry point.

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

/// `Snapshot::run`, `thread::spawn` and `Context::child` of a thread's own context give
/// explicit contexts: an inherited explicit-only value is a plain local there; nothing comes
/// back into the thread's own context.
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
// Captures re-entered from inside `Clone`.

/// A value whose `Clone` writes another inheritable local (and reads a third) while a capture
/// is copying it: the capture stays consistent, later captures see the write, every value is
/// dropped once.
#[test]
fn clone_that_writes_another_inheritable_local_during_a_capture() {
    static B: Local<Counted> = Local::named("B").inheritable();
    static T: std::sync::OnceLock<Tally> = std::sync::OnceLock::new();
    struct Sneaky(u64);
    impl Clone for Sneaky {
        fn clone(&self) -> Self {
            B.set(T.get().unwrap().make(self.0 + 100));
            Sneaky(self.0)
        }
    }
    static A: Local<Sneaky> = Local::named("A").inheritable();
    let t = T.get_or_init(Tally::new).clone();
    let ctx = Context::new();
    ctx.run(|| {
        B.set(t.make(1));
        A.set(Sneaky(1));
        // Writes B while the capture is building its frame (A's clone happens when the fork
        // first needs it, or at capture: either way no torn or stale frame).
        let snap = Snapshot::capture();
        let seen = snap.run(|| (A.with(|a| a.0), B.with(|b| b.n)));
        assert_eq!(seen.0, 1);
        assert!(seen.1 == 1 || seen.1 == 101, "{seen:?}");
        let again = Snapshot::capture().run(|| B.with(|b| b.n));
        assert_eq!(
            again,
            B.with(|b| b.n),
            "a later capture sees the current value"
        );
        drop(snap);
    });
    drop(ctx);
    t.assert_all_dropped();
}

/// A `Clone` that panics while a capture copies the value (at `thread::spawn`): the panic
/// comes out at the caller, nothing is half-captured, every value dropped once, and the next
/// capture works.
#[test]
fn clone_panicking_during_a_capture_loses_nothing() {
    static FAIL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    struct Fragile(Counted);
    impl Clone for Fragile {
        fn clone(&self) -> Self {
            if FAIL.swap(false, std::sync::atomic::Ordering::SeqCst) {
                panic!("clone failed");
            }
            Fragile(self.0.clone())
        }
    }
    static A: Local<Fragile> = Local::named("A").inheritable();
    static C: Local<Counted> = Local::named("C").inheritable();
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        C.set(t.make(2));
        A.set(Fragile(t.make(1)));
        let msg = expect_panic(|| {
            let snap = Snapshot::capture();
            // Copy-on-write: the clone may happen at the fork's first write instead.
            snap.run(|| A.with_mut(|a| a.0.n += 1));
        });
        assert!(msg.contains("clone failed"), "{msg}");
        assert_eq!(A.with(|a| a.0.n), 1);
        let seen = Snapshot::capture().run(|| {
            A.with_mut(|a| a.0.n += 10);
            (A.with(|a| a.0.n), C.with(|c| c.n))
        });
        assert_eq!(seen, (11, 2));
        assert_eq!(A.with(|a| a.0.n), 1, "the parent keeps its own");
    });
    drop(ctx);
    t.assert_all_dropped();
}

// ---------------------------------------------------------------------------------------------
// Fork borrow marks: an inherited value lent to `with` in a fork.

#[test]
fn every_write_inside_with_of_an_inherited_value_in_a_fork_is_refused() {
    static L: Local<Counted> = Local::named("L").inheritable();
    static S: LocalStack<Counted> = LocalStack::named("S").inheritable();
    let t = Tally::new();
    let parent = Context::new();
    let snap = parent.run(|| {
        L.set(t.make(1));
        S.push(t.make(10));
        Snapshot::capture()
    });
    snap.run(|| {
        L.with(|outer| {
            assert!(L.try_with_mut(|_| ()).is_err());
            for (what, msg) in [
                ("set", expect_panic(|| L.set(t.make(2)))),
                ("replace", expect_panic(|| L.replace(t.make(3)))),
                ("take", expect_panic(|| L.take())),
                ("release", expect_panic(|| L.release())),
                ("with_mut", expect_panic(|| L.with_mut(|_| ()))),
            ] {
                assert!(msg.contains("`L`"), "{what}: {msg}");
            }
            assert_eq!(outer.n, 1, "the outer `with` still sees its value");
        });
        S.with_top(|outer| {
            for (what, msg) in [
                ("push", expect_panic(|| S.push(t.make(11)))),
                ("pop", expect_panic(|| S.pop())),
                ("with_top_mut", expect_panic(|| S.with_top_mut(|_| ()))),
                ("release", expect_panic(|| S.release())),
            ] {
                assert!(msg.contains("`S`"), "{what}: {msg}");
            }
            let guard =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| S.enter(t.make(12))));
            assert!(guard.is_err(), "enter inside with_top");
            assert_eq!(outer.n, 10);
        });
        // After the borrows: ordinary writes, the fork's own.
        L.set(t.make(4));
        assert_eq!(S.pop().map(|v| v.n), Some(10));
    });
    assert_eq!(parent.run(|| (L.with(|v| v.n), S.len())), (1, 1));
    drop((snap, parent));
    t.assert_all_dropped();
}

/// `for_each` and `contexts` agree on whether a fork that only inherited a value holds it,
/// and a fork's own write is visited as the fork's.
#[test]
fn for_each_and_contexts_agree_on_forks() {
    static L: Local<u64> = Local::named("L").inheritable();
    let parent = Context::new();
    let snap = parent.run(|| {
        L.set(1);
        Snapshot::capture()
    });
    let fork = snap.fork();
    fork.run(|| assert_eq!(L.get(), Some(1)));
    let count = || {
        let mut n = 0;
        L.for_each(|_, _| n += 1);
        (n, L.contexts())
    };
    let (visited, counted) = count();
    assert_eq!(visited, counted, "before the fork writes");
    fork.run(|| L.set(2));
    let mut seen = Vec::new();
    L.for_each(|id, v| seen.push((id, *v)));
    assert!(seen.contains(&(fork.id(), 2)), "{seen:?}");
    assert!(seen.contains(&(parent.id(), 1)), "{seen:?}");
    assert_eq!(seen.len(), L.contexts());
}

// ---------------------------------------------------------------------------------------------
// tower: ExtractLayer and ContextLayer together, in both orders (both are documented as
// "outermost"): ExtractLayer starts the request's context itself, so it takes ContextLayer's
// place. These pin down what each order does.

#[cfg(all(feature = "tower", feature = "http"))]
mod extract_with_context_layer {
    use std::convert::Infallible;
    use std::task::{Context as TaskContext, Poll};

    use context_local::baggage::Propagator;
    use context_local::tower::{ContextLayer, ExtractLayer};
    use context_local::Local;
    use tower::ServiceExt;
    use tower_layer::Layer;
    use tower_service::Service;

    static TENANT: Local<String> = Local::named("TENANT").baggage("tenant");
    static ITENANT: Local<String> = Local::named("ITENANT").baggage("itenant").inheritable();
    static USER: Local<String> = Local::named("USER").explicit_only();
    static PROPAGATOR: Propagator = Propagator::of(&[TENANT.carried(), ITENANT.carried()]);

    /// A middleware that sets the user, then calls the inner service.
    #[derive(Clone)]
    struct SetUser<S>(S);
    impl<S: Service<http::Request<()>>> Service<http::Request<()>> for SetUser<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;
        fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, r: http::Request<()>) -> S::Future {
            USER.set("ada".into());
            self.0.call(r)
        }
    }

    async fn handler(_: http::Request<()>) -> Result<String, Infallible> {
        Ok(format!(
            "{:?} {:?} {:?}",
            TENANT.get(),
            ITENANT.get(),
            USER.get()
        ))
    }

    fn request() -> http::Request<()> {
        let mut r = http::Request::new(());
        r.headers_mut()
            .insert("baggage", "tenant=acme,itenant=corp".parse().unwrap());
        r
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    /// Right: ExtractLayer outermost in ContextLayer's place, the middleware inside it.
    #[test]
    fn extract_layer_in_context_layers_place_serves_everything() {
        let service = ExtractLayer::new(&PROPAGATOR).layer(SetUser(tower::service_fn(handler)));
        assert_eq!(
            block_on(service.oneshot(request())).unwrap(),
            r#"Some("acme") Some("corp") Some("ada")"#
        );
    }

    /// ContextLayer outside ExtractLayer: the extracted context is not a child of the one the
    /// outer middleware wrote in, so the user it set is gone in the handler.
    #[test]
    fn context_layer_outside_extract_layer_loses_what_outer_middleware_set() {
        let service = ContextLayer::new().layer(SetUser(
            ExtractLayer::new(&PROPAGATOR).layer(tower::service_fn(handler)),
        ));
        assert_eq!(
            block_on(service.oneshot(request())).unwrap(),
            r#"Some("acme") Some("corp") None"#
        );
    }

    /// ContextLayer inside ExtractLayer: a child of the extracted context; the extracted
    /// values reach the handler (an extracted non-inheritable local is in the snapshot's frame,
    /// and a child of a fork that has not written it inherits that frame).
    #[test]
    fn context_layer_inside_extract_layer_sees_the_extracted_values() {
        let service = ExtractLayer::new(&PROPAGATOR)
            .layer(ContextLayer::new().layer(SetUser(tower::service_fn(handler))));
        assert_eq!(
            block_on(service.oneshot(request())).unwrap(),
            r#"Some("acme") Some("corp") Some("ada")"#
        );
    }

    /// A non-inheritable baggage local restored from a header, then written by the request:
    /// a child must see either nothing (the local is not inheritable) or the current value —
    /// never the stale header value the request replaced.
    #[test]
    fn a_child_never_sees_a_replaced_extracted_value_of_a_non_inheritable_local() {
        let mut headers = std::collections::HashMap::new();
        headers.insert("baggage".to_string(), "tenant=acme".to_string());
        let extracted = PROPAGATOR.extract(&headers);
        let seen = extracted.snapshot().run(|| {
            assert_eq!(TENANT.get().as_deref(), Some("acme"));
            TENANT.set("beta".into());
            let child = context_local::Context::child().run(|| TENANT.get());
            let thread = context_local::thread::spawn(|| TENANT.get())
                .join()
                .unwrap();
            let taken = {
                TENANT.take();
                context_local::Context::child().run(|| TENANT.get())
            };
            (child, thread, taken)
        });
        for (what, v) in [("child", &seen.0), ("thread", &seen.1)] {
            assert!(
                v.is_none() || v.as_deref() == Some("beta"),
                "{what} saw {v:?} after the request set beta"
            );
        }
        assert_eq!(seen.2, None, "a child after take() saw {:?}", seen.2);
    }
}

// ---------------------------------------------------------------------------------------------
// Stack scope futures: pops inside, panics, polled in turns by two contexts.

#[test]
fn stack_scope_future_pop_of_the_inner_element_across_contexts_counts_once() {
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let (c1, c2) = (Context::new(), Context::new());
    let t2 = t.clone();
    let mut fut = Box::pin(S.scope_future(t.make(0), async move {
        S.push(t2.make(1));
        S.push(t2.make(2));
        yield_now().await;
        let popped = S.pop().map(|v| v.n);
        let top = S.with_top(|v| v.n);
        yield_now().await;
        let popped2 = S.pop().map(|v| v.n);
        let top2 = S.with_top(|v| v.n);
        yield_now().await;
        (popped, top, popped2, top2, S.len())
    }));
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c2.run(|| poll_once(fut.as_mut())).is_pending());
    assert!(c1.run(|| poll_once(fut.as_mut())).is_pending());
    let out = c2.run(|| poll_once(fut.as_mut()));
    assert_eq!(out, Poll::Ready((Some(2), Some(1), Some(1), Some(0), 1)));
    assert_eq!((c1.run(|| S.len()), c2.run(|| S.len()), S.len()), (0, 0, 0));
    drop(fut);
    drop((c1, c2));
    t.assert_all_dropped();
}

#[test]
fn scope_futures_panicking_mid_poll_restore_and_drop_everything_once() {
    static L: Local<Counted> = Local::named("L");
    static S: LocalStack<Counted> = LocalStack::named("S");
    let t = Tally::new();
    let ctx = Context::new();
    ctx.run(|| {
        L.set(t.make(1));
        S.push(t.make(10));
    });
    let t2 = t.clone();
    let mut fut = Box::pin(L.scope_future(
        t.make(2),
        S.scope_future(t.make(11), async move {
            S.push(t2.make(12));
            L.set(t2.make(3));
            yield_now().await;
            panic!("handler failed");
        }),
    ));
    assert!(ctx.run(|| poll_once(fut.as_mut())).is_pending());
    let msg = expect_panic(|| ctx.run(|| poll_once(fut.as_mut())));
    assert!(msg.contains("handler failed"), "{msg}");
    // After the panic, before the future is dropped: the context has its own values back.
    assert_eq!(
        ctx.run(|| (L.with(|v| v.n), S.len(), S.with_top(|v| v.n))),
        (1, 1, Some(10))
    );
    ctx.run(|| drop(fut));
    // Dropped: the scope's own element is removed; what its future pushed and never popped
    // stays where the scope ended, as after `S.scope(v, || S.push(x))`.
    assert_eq!(
        ctx.run(|| (L.with(|v| v.n), S.len(), S.with_top(|v| v.n))),
        (1, 2, Some(12))
    );
    drop(ctx);
    t.assert_all_dropped();
}
