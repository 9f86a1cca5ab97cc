//! `context_stack!` in a crate that reaches context-local through a re-export: each
//! declaration says where it is with `#[crate = path]`, among its other attributes, also when a
//! `macro_rules!` wrapper adds it with `$crate`. The option is consumed, never emitted.
#![deny(warnings, missing_docs, unused_qualifications)]

mod facade {
    pub use context_local as cl;
}

/// A stand-in for context-local with a `LocalStack` of its own: a static of this type proves
/// that the expansion used the given path.
mod stand_in {
    pub mod __private {
        pub struct LocalStack<T>(pub std::marker::PhantomData<T>, pub &'static str);

        impl<T> LocalStack<T> {
            pub const fn named(name: &'static str) -> Self {
                LocalStack(std::marker::PhantomData, name)
            }
        }
    }
}

/// A framework's wrapper, so that its users write no option.
macro_rules! app_stack {
    ($(#[$m:meta])* $vis:vis static $name:ident: $ty:ty) => {
        $crate::facade::cl::context_stack!(#[crate = $crate::facade::cl] $(#[$m])* $vis static $name: $ty);
    };
}

facade::cl::context_stack!(#[crate = crate::facade::cl] static ONE_LINE: u8);

facade::cl::context_stack! {
    /// Documented before the option.
    #[crate = crate::facade::cl]
    pub static JOBS: String;
    #[crate = self::facade::cl]
    /// Documented after the option.
    #[allow(dead_code)]
    static UNUSED: u32;
}

app_stack!(
    /// Through the wrapper.
    pub static APPS: &'static str
);

facade::cl::context_stack!(#[crate = crate::stand_in] static PROOF: u8);

fn main() {
    ONE_LINE.push(1);
    JOBS.push("index".into());
    APPS.scope("shop", || assert_eq!(APPS.top(), Some("shop")));
    assert_eq!(
        (ONE_LINE.pop(), JOBS.pop().as_deref()),
        (Some(1), Some("index"))
    );
    assert_eq!(APPS.name(), "APPS");
    let proof: &stand_in::__private::LocalStack<u8> = &PROOF;
    assert_eq!(proof.1, "PROOF");
}
