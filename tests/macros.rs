//! `#[context_local]` and `context_stack!` through the facade, compiled under the strictest
//! lints a user might set: generated code must add no warning (clippy runs this file in CI).
#![deny(warnings, missing_docs, unused_qualifications, clippy::all)]

mod common;

use common::{expect_panic, panic_location, Tally};
use context_local::{
    context_local, context_stack, AccessErrorKind, Context, LocalManager, LocalProxy,
};

/// The request being handled.
#[context_local]
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Its id.
    pub id: u64,
    /// Who sent it.
    pub user: Option<String>,
}

/// Not `Clone`: `get` must not break it.
#[context_local(name = "CURRENT_USER")]
pub struct User(pub String);

/// Lazily `Default` in each context.
#[context_local(default)]
#[derive(Default)]
pub struct Hits(pub u32);

fn start_at_ten() -> Budget {
    Budget(10)
}

/// Lazily `start_at_ten()` in each context.
#[context_local(init = start_at_ten, crate = ::context_local)]
pub struct Budget(pub u32);

/// A unit struct, private: its unused accessors must not warn.
#[context_local]
struct Flag;

/// Counted values, for drop accounting.
#[context_local]
struct Tracked(common::Counted);

context_stack!(
    /// The requests being handled, innermost on top.
    pub static REQUESTS: Request
);
context_stack! {
    /// Jobs of the current worker.
    pub(crate) static JOBS: u32;
    #[allow(dead_code)]
    static DEPTH: u32;
    /// Counted values.
    static TRACKED: common::Counted;
}

/// The current tenant: inherited by child contexts.
#[context_local(inherit)]
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant(pub String);

/// Lazily empty and inherited: `inherit` with another option.
#[context_local(default, inherit, name = "TRAIL")]
#[derive(Clone, Default)]
pub struct Trail(pub Vec<u32>);

context_stack! {
    /// The apps of the current request, inherited by child contexts.
    #[inherit]
    pub static APPS: &'static str;
    /// Spans: not inherited.
    static SPANS: &'static str;
}

static CURRENT_REQUEST: LocalProxy<Request> = Request::proxy();
static TOP_REQUEST: LocalProxy<Request> = REQUESTS.proxy();

#[test]
fn the_generated_accessors_forward_to_a_per_context_local() {
    assert!(!Request::is_set());
    assert_eq!(Request::get(), None);
    Request::set(Request { id: 1, user: None });
    assert_eq!(Request::with(|r| r.id), 1);
    Request::with_mut(|r| r.user = Some("ada".into()));
    assert_eq!(CURRENT_REQUEST.with(|r| r.user.clone()), Some("ada".into()));
    let old = Request::replace(Request { id: 2, user: None });
    assert_eq!(old.map(|r| r.id), Some(1));
    assert_eq!(Request::try_with(|r| r.id), Ok(2));
    assert_eq!(Request::try_with_mut(|r| r.id), Ok(2));
    assert_eq!(Request::local().name(), "Request");
    std::thread::spawn(|| assert!(!Request::is_set()))
        .join()
        .unwrap();
    assert_eq!(Request::take().map(|r| r.id), Some(2));
    Request::set(Request { id: 3, user: None });
    Request::release();
    assert!(!Request::is_set());
}

#[test]
fn errors_name_the_struct_or_the_name_option() {
    let msg = expect_panic(|| User::with(|u| u.0.clone()));
    assert!(msg.contains("`CURRENT_USER`"), "{msg}");
    User::set(User("ada".into()));
    User::with(|_| {
        let err = User::try_with_mut(|_| ()).unwrap_err();
        assert_eq!(
            (err.name(), err.kind()),
            ("CURRENT_USER", AccessErrorKind::Borrowed)
        );
    });
    assert!(Flag::try_with(|_| ()).is_err());
}

#[test]
fn default_and_init_bind_lazily_in_each_context() {
    Hits::with_mut(|h| h.0 += 1);
    Hits::with_mut(|h| h.0 += 1);
    assert_eq!(Hits::with(|h| h.0), 2);
    assert_eq!(Context::new().run(|| Hits::with(|h| h.0)), 0);
    assert!(!Budget::is_set());
    assert_eq!(Budget::with(|b| b.0), 10);
    Budget::with_mut(|b| b.0 -= 3);
    assert_eq!(
        std::thread::spawn(|| Budget::with(|b| b.0)).join().unwrap(),
        10
    );
    assert_eq!(Budget::with(|b| b.0), 7);
}

#[test]
fn declared_stacks_are_named_and_per_context() {
    assert_eq!(REQUESTS.name(), "REQUESTS");
    assert_eq!(JOBS.name(), "JOBS");
    REQUESTS.scope(Request { id: 9, user: None }, || {
        assert_eq!(TOP_REQUEST.get().map(|r| r.id), Some(9));
        Context::new().run(|| assert!(REQUESTS.is_empty()));
    });
    JOBS.push(1);
    let err = expect_panic(|| JOBS.with_top(|_| JOBS.push(2)));
    assert!(err.contains("`JOBS`"), "{err}");
    assert_eq!(JOBS.pop(), Some(1));
}

#[test]
fn generated_locals_work_with_a_manager_and_drop_values_exactly_once() {
    let t = Tally::new();
    let manager = LocalManager::new([Tracked::local() as _, &TRACKED as _]);
    manager.scope(|| {
        Tracked::set(Tracked(t.make(1)));
        TRACKED.push(t.make(2));
        assert_eq!(Tracked::with(|t| t.0.n), 1);
    });
    assert_eq!(t.live(), 0);
    let t2 = t.clone();
    std::thread::spawn(move || {
        Tracked::set(Tracked(t2.make(3)));
        TRACKED.push(t2.make(4));
    })
    .join()
    .unwrap();
    assert_eq!((t.live(), t.created()), (0, 4));
}

#[test]
fn inherit_locals_start_bound_in_children_and_the_others_do_not() {
    let acme = || Some(Tenant("acme".into()));
    Context::new().run(|| {
        Tenant::set(Tenant("acme".into()));
        Trail::with_mut(|t| t.0.push(1));
        Request::set(Request { id: 1, user: None });
        let seen = context_local::thread::spawn(|| {
            (
                Tenant::get(),
                Trail::with(|t| t.0.clone()),
                Request::is_set(),
            )
        });
        assert_eq!(seen.join().unwrap(), (acme(), vec![1], false));
        let child = Context::child();
        Tenant::set(Tenant("later".into()));
        child.run(|| {
            assert_eq!((Tenant::get(), Request::is_set()), (acme(), false));
            Tenant::set(Tenant("child".into()));
            Trail::with_mut(|t| t.0.push(2));
        });
        assert_eq!(Tenant::get(), Some(Tenant("later".into())));
        assert_eq!(Trail::with(|t| t.0.clone()), [1]);
    });
    assert_eq!(Trail::local().name(), "TRAIL");
}

#[test]
fn inherit_stacks_start_with_the_parents_elements_and_the_others_do_not() {
    Context::new().run(|| {
        APPS.push("shop");
        SPANS.push("handler");
        let seen = context_local::thread::spawn(|| (APPS.top(), SPANS.is_empty()));
        assert_eq!(seen.join().unwrap(), (Some("shop"), true));
        Context::child().run(|| {
            assert!(SPANS.is_empty());
            APPS.push("admin");
            assert_eq!(
                (APPS.pop(), APPS.pop(), APPS.pop()),
                (Some("admin"), Some("shop"), None)
            );
        });
        assert_eq!(
            (APPS.len(), APPS.top(), SPANS.top()),
            (1, Some("shop"), Some("handler"))
        );
    });
}

/// `#[context_local(baggage = "..")]`: a local that travels to other services.
mod baggage {
    use std::collections::HashMap;
    use std::convert::Infallible;
    use std::fmt;
    use std::str::FromStr;

    use context_local::baggage::Propagator;
    use context_local::{context_local, Context};

    /// The current tenant, carried to other services as `tenant` (and so inherited).
    #[context_local(baggage = "tenant")]
    #[derive(Clone, Debug, PartialEq)]
    struct Tenant(String);

    impl fmt::Display for Tenant {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl FromStr for Tenant {
        type Err = Infallible;

        fn from_str(s: &str) -> Result<Self, Infallible> {
            Ok(Tenant(s.to_owned()))
        }
    }

    fn acme() -> Option<Tenant> {
        Some(Tenant("acme corp".into()))
    }

    #[test]
    fn baggage_locals_are_injected_extracted_and_inherited() {
        assert_eq!(Tenant::local().baggage_key(), Some("tenant"));
        let propagator = Propagator::new().with(Tenant::local());
        let mut headers = HashMap::new();
        Context::new().run(|| {
            Tenant::set(Tenant("acme corp".into()));
            propagator.inject(&mut headers).unwrap();
            let child = Context::child();
            Tenant::set(Tenant("later".into()));
            assert_eq!(child.run(Tenant::get), acme());
        });
        assert_eq!(headers["baggage"], "tenant=acme%20corp");

        let extracted = propagator.extract(&headers);
        assert!(extracted.errors().is_empty(), "{:?}", extracted.errors());
        let seen = extracted.snapshot().run(|| {
            let thread = context_local::thread::spawn(Tenant::get);
            let child = Context::child().run(Tenant::get);
            (Tenant::get(), child, thread.join().unwrap())
        });
        assert_eq!(seen, (acme(), acme(), acme()));
        assert!(!Tenant::is_set(), "extraction binds nothing here");
    }
}

#[test]
fn panics_point_at_the_callers_line() {
    let mut wrong = Vec::new();
    // Each panicking call is on the line before its check.
    let mut check = |what: &str, at: (String, u32), line: u32| {
        if at != (file!().to_owned(), line - 1) {
            wrong.push(format!("{what}: {}:{}", at.0, at.1));
        }
    };
    Context::new().run(|| {
        let at = panic_location(|| Request::with(|r| r.id));
        check("with, unbound", at, line!());
        let at = panic_location(|| Request::with_mut(|r| r.id));
        check("with_mut, unbound", at, line!());

        Request::set(Request { id: 1, user: None });
        let (set, replace) = (Request { id: 2, user: None }, Request { id: 3, user: None });
        let at = panic_location(|| Request::with(|_| Request::set(set)));
        check("set inside with", at, line!());
        let at = panic_location(|| Request::with(|_| Request::replace(replace)));
        check("replace inside with", at, line!());
        let at = panic_location(|| Request::with(|_| Request::take()));
        check("take inside with", at, line!());
        let at = panic_location(|| Request::with(|_| Request::release()));
        check("release inside with", at, line!());
        let at = panic_location(|| Request::with(|_| Request::with_mut(|_| ())));
        check("with_mut inside with", at, line!());
        let at = panic_location(|| Request::with_mut(|_| Request::with(|_| ())));
        check("with inside with_mut", at, line!());
        let at = panic_location(|| Request::with_mut(|_| Request::get()));
        check("get inside with_mut", at, line!());
    });
    assert!(
        wrong.is_empty(),
        "these panics do not point at the caller's line in {}:\n{}",
        file!(),
        wrong.join("\n")
    );
}
