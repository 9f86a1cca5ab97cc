//! Two context locals and several stacks in one module never collide, and the generated code
//! is clean under strict lints.
#![deny(warnings, missing_docs, unused_qualifications)]

use context_local::{context_local, context_stack};

/// First.
#[context_local]
#[derive(Clone)]
pub struct A(pub u8);

/// Second.
#[context_local(name = "B_LOCAL")]
pub struct B(pub u8);

/// Private and unused.
#[context_local]
struct Unused;

mod inner {
    use context_local::context_stack;

    context_stack! {
        /// A stack in a module.
        pub static S: u8;
    }
}

context_stack!(
    /// A stack at the root.
    pub static S: u8
);

fn main() {
    A::set(A(1));
    B::set(B(2));
    S.push(3);
    inner::S.push(4);
    assert_eq!(A::get().map(|a| a.0), Some(1));
    assert_eq!(B::with(|b| b.0), 2);
    assert_eq!((S.pop(), inner::S.pop()), (Some(3), Some(4)));
}
