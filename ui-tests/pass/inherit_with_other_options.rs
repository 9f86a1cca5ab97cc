//! `inherit` combines with every other option of both macros, and the generated code stays
//! clean under strict lints; the values really are inherited.
#![deny(warnings, missing_docs, unused_qualifications, clippy::all)]

mod facade {
    pub use context_local as cl;
}

use context_local::{context_local, context_stack, Context};

fn anonymous() -> User {
    User {
        name: "anonymous".into(),
    }
}

/// The current user: lazily anonymous, inherited by children.
#[context_local(inherit, init = anonymous, name = "USER", crate = crate::facade::cl)]
#[derive(Clone)]
pub struct User {
    /// Who.
    pub name: String,
}

/// Lazily zero, inherited by children.
#[context_local(default, inherit)]
#[derive(Clone, Default)]
pub struct Hits(pub u32);

/// Private and unused: no warning.
#[context_local(inherit)]
#[derive(Clone)]
struct Unused;

context_stack! {
    /// The apps of the current request, inherited by children.
    #[inherit]
    #[crate = crate::facade::cl]
    pub static APPS: &'static str;
    #[crate = ::context_local]
    #[allow(dead_code)]
    #[inherit]
    static UNUSED: u8;
}

fn main() {
    assert_eq!(User::local().name(), "USER");
    User::with_mut(|u| u.name = "ada".into());
    Hits::with_mut(|h| h.0 += 1);
    APPS.push("shop");
    Context::child().run(|| {
        assert_eq!(User::with(|u| u.name.clone()), "ada");
        assert_eq!((Hits::with(|h| h.0), APPS.top()), (1, Some("shop")));
    });
    let fresh = Context::new().run(|| (User::with(|u| u.name.clone()), APPS.top()));
    assert_eq!(fresh, ("anonymous".to_owned(), None));
    assert_eq!(APPS.pop(), Some("shop"));
}
