//! Proc macros of [`context-local`](https://docs.rs/context-local): `#[context_local]` and
//! `context_stack!`. Use them through the `context-local` crate, which documents them.
//!
//! This file holds only the entry points: options are parsed in `options`, `#[context_local]`
//! is validated and expanded in `local`, `context_stack!` is parsed and expanded in `stack`.

#![forbid(unsafe_code)]

mod errors;
mod local;
mod options;
#[cfg(test)]
mod snapshot;
mod stack;

use proc_macro::TokenStream;

/// Makes a struct a per-context value: one value per context (thread, or entered
/// [`Context`](https://docs.rs/context-local/latest/context_local/struct.Context.html)), reached
/// through static accessors.
///
/// The struct is kept as written. With the struct's visibility, it gains `set`, `replace`,
/// `take`, `is_set`, `with`, `try_with`, `with_mut`, `try_with_mut`, `get` (when the struct is
/// `Clone`), `release`, `local()` (its `Local`, for a `LocalManager` or iteration) and
/// `proxy()`, all backed by a hidden `static Local<Self>`.
///
/// Options, comma-separated:
/// - `default`: each context lazily starts with `Default::default()`;
/// - `init = path`: each context lazily starts with `path()`;
/// - `name = "..."`: the name errors and panics use (default: the struct's name);
/// - `inherit`: the value is inheritable (`Local::inheritable`): a child context —
///   `Context::child()`, `in_child_context()`, `context_local::thread::spawn`, a
///   `Snapshot` — starts with the value bound when the child is made, and writes on either
///   side stay their own; the struct must then also be `Clone + Sync`;
/// - `baggage = "key"`: the value travels with a request to the services it calls, as W3C
///   Baggage under `key` (`Local::baggage`), with a `context_local::baggage::Propagator` that
///   lists `Self::local()`; it is inheritable too (`inherit` is implied), so the children of
///   a request see the value extracted for it. The key is an HTTP token (letters, digits and
///   ``!#$%&'*+-.^_`|~``); the struct must also be `Clone + Sync` and a `BaggageValue`: every
///   `Display + FromStr` type whose `FromStr::Err` is `Display` is one, others implement it;
/// - `explicit_only`: a thread's own context never holds the value (`Local::explicit_only`):
///   `set`, `replace`, `with_mut` and a lazy `default`/`init` panic there, at the caller's
///   line, saying how to give the work a context of its own; `scope`/`scope_future` are
///   allowed anywhere. Recommended for request values: wiring that would let one request's
///   value reach the next request on the same thread fails at the first request;
/// - `crate = path`: where `context_local` is, for crates that re-export it.
///
/// On fields, `#[baggage = "key"]` sends those fields as baggage members of their own
/// (`tenant=acme,request-id=r-3`) instead of the whole value as one: the struct implements
/// `context_local::baggage::BaggageFields`, a propagator carries it with
/// `Propagator::new().with_fields(Self::local())` (or `Propagator::of(&[Self::local()
/// .carried_fields()])` in a `static`), and the receiving service's struct is rebuilt from
/// those members when all of them came and parsed, its other fields set to
/// `Default::default()`. Each carried field's type must be a `BaggageValue`, each other
/// field's type `Default`, and the struct is inheritable (so `Clone + Sync`); keys are HTTP
/// tokens, one per field, all different; it does not combine with `baggage = "key"` on the
/// struct.
///
/// The struct must be `Send + 'static` (with `inherit` or fields carried as baggage,
/// `Clone + Sync` too; with `baggage`, also `BaggageValue`) and not generic; a mistake gets
/// one error, pointing at it. The
/// accessors that can panic (`set`, `replace`, `take`, `with`, `with_mut`, `get`, `release`)
/// are `#[track_caller]`: a panic reports the line that called them.
///
/// # Examples
///
/// ```
/// use context_local::context_local;
///
/// #[context_local]
/// #[derive(Clone, Debug, PartialEq)]
/// pub struct Request {
///     pub id: u64,
///     pub user: Option<String>,
/// }
///
/// #[context_local(default, name = "HITS")]
/// #[derive(Default)]
/// struct Hits(u32);
///
/// fn handler() -> String {
///     Hits::with_mut(|h| h.0 += 1);
///     Request::with(|r| format!("{} for {:?}", r.id, r.user))
/// }
///
/// Request::set(Request { id: 7, user: Some("ada".into()) });
/// assert_eq!(handler(), "7 for Some(\"ada\")");
/// assert_eq!(Hits::with(|h| h.0), 1);
/// std::thread::spawn(|| assert!(!Request::is_set())).join().unwrap();
/// assert_eq!(Request::take().map(|r| r.id), Some(7));
/// ```
///
/// With `explicit_only`, a request value is refused outside a context of its own, so a request
/// handled without one (a missing or misplaced `ContextLayer`) fails at once instead of
/// leaving its value for the next request on the thread:
///
/// ```
/// use context_local::{context_local, Context};
///
/// #[context_local(explicit_only)]
/// #[derive(Clone)]
/// pub struct RequestId(u64);
///
/// Context::new().run(|| {
///     RequestId::set(RequestId(7));
///     assert_eq!(RequestId::with(|r| r.0), 7);
/// });
/// let refused = std::panic::catch_unwind(|| RequestId::set(RequestId(8)));
/// assert!(refused.is_err()); // the thread's own context: never
/// assert!(!RequestId::is_set());
/// ```
///
/// With `inherit`, threads and tasks started for a request see its values:
///
/// ```
/// use context_local::{context_local, thread, Context};
///
/// #[context_local(inherit)]
/// #[derive(Clone)]
/// struct Tenant(String);
///
/// Tenant::set(Tenant("acme".into()));
/// let worker = thread::spawn(|| Tenant::with(|t| t.0.clone()));
/// assert_eq!(worker.join().unwrap(), "acme");
/// Context::child().run(|| Tenant::set(Tenant("other".into()))); // the child's own
/// assert_eq!(Tenant::with(|t| t.0.clone()), "acme");
/// ```
///
/// With `baggage`, a value also travels to the services a request calls, and is restored
/// there for the request they handle:
///
/// ```
/// use std::collections::HashMap;
/// use std::{fmt, str::FromStr};
///
/// use context_local::{baggage::Propagator, context_local, Context};
///
/// #[context_local(baggage = "tenant")]
/// #[derive(Clone, Debug, PartialEq)]
/// struct Tenant(String);
///
/// impl fmt::Display for Tenant {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str(&self.0)
///     }
/// }
///
/// impl FromStr for Tenant {
///     type Err = std::convert::Infallible;
///     fn from_str(s: &str) -> Result<Self, Self::Err> {
///         Ok(Tenant(s.to_owned()))
///     }
/// }
///
/// let propagator = Propagator::new().with(Tenant::local());
///
/// // Calling another service:
/// Tenant::set(Tenant("acme".into()));
/// let mut headers = HashMap::new();
/// propagator.inject(&mut headers).unwrap();
/// assert_eq!(headers["baggage"], "tenant=acme");
///
/// // In that service, handling the call: the request's context and its children see it.
/// let request = propagator.extract(&headers).into_snapshot().fork();
/// let seen = request.run(|| Context::child().run(Tenant::get));
/// assert_eq!(seen, Some(Tenant("acme".into())));
/// ```
///
/// With `#[baggage = "key"]` on fields, those fields travel as members of their own, and the
/// struct is rebuilt from them (the other fields `Default`):
///
/// ```
/// use std::collections::HashMap;
///
/// use context_local::{baggage::Propagator, context_local};
///
/// #[context_local]
/// #[derive(Clone, Debug, Default, PartialEq)]
/// struct Request {
///     #[baggage = "tenant"]
///     tenant: String,
///     #[baggage = "request-id"]
///     id: u64,
///     user: Option<String>, // stays in this service
/// }
///
/// // In a `static`, without `LazyLock`:
/// static PROPAGATOR: Propagator = Propagator::of(&[Request::local().carried_fields()]);
///
/// Request::set(Request { tenant: "acme".into(), id: 3, user: Some("ada".into()) });
/// let mut headers = HashMap::new();
/// PROPAGATOR.inject(&mut headers).unwrap();
/// assert_eq!(headers["baggage"], "tenant=acme,request-id=3");
///
/// let extracted = PROPAGATOR.extract(&headers);
/// let rebuilt = extracted.snapshot().run(Request::get);
/// assert_eq!(rebuilt, Some(Request { tenant: "acme".into(), id: 3, user: None }));
/// ```
#[proc_macro_attribute]
pub fn context_local(args: TokenStream, item: TokenStream) -> TokenStream {
    local::expand(args.into(), item.into()).into()
}

/// Declares per-context stacks: each `static NAME: Type` becomes a
/// `static NAME: LocalStack<Type>` named `"NAME"` in errors, keeping its doc comments and
/// attributes.
///
/// One declaration takes one line; a block takes several, `;`-separated. The element type must
/// be `Send + 'static` (with `#[inherit]`, `Clone + Sync` too); there is no initializer (every
/// context starts with an empty stack) and no `static mut` (stacks change through `&`). A
/// mistake gets one error, pointing at it.
///
/// A declaration's options are attributes of it, among its other attributes, in any order;
/// the macro consumes them:
/// - `#[inherit]`: the stack is inheritable (`LocalStack::inheritable`): a child context —
///   `Context::child()`, `in_child_context()`, `context_local::thread::spawn`, a `Snapshot` —
///   starts with the elements there when the child is made; its pushes and pops stay its own
///   (popping an inherited element gives it a clone);
/// - `#[explicit_only]`: a thread's own context never holds its elements
///   (`LocalStack::explicit_only`): `push` and `enter` panic there; `scope`/`scope_future`
///   are allowed anywhere;
/// - `#[crate = path]`: where `context_local` is, for crates that re-export it; the path is
///   written as in `#[context_local(crate = path)]` (serde's `#[serde(crate = "...")]` and
///   tokio's `crate = "..."` do the same with a string).
///
/// # Examples
///
/// ```
/// use context_local::context_stack;
///
/// context_stack!(pub static REQUESTS: u64);
/// context_stack! {
///     /// Jobs of the current worker.
///     pub(crate) static JOBS: String;
///     static DEPTH: u32;
/// }
///
/// REQUESTS.scope(1, || {
///     assert_eq!(REQUESTS.top(), Some(1));
///     JOBS.push("index".to_string());
/// });
/// assert_eq!(JOBS.pop().as_deref(), Some("index"));
/// assert!(DEPTH.is_empty());
/// assert_eq!(REQUESTS.name(), "REQUESTS");
/// ```
///
/// An inheritable stack, for what a request's threads and tasks should see:
///
/// ```
/// use context_local::{context_stack, thread, Context};
///
/// context_stack! {
///     /// The apps of the current request.
///     #[inherit]
///     pub static APPS: &'static str;
/// }
///
/// APPS.scope("shop", || {
///     let worker = thread::spawn(|| APPS.top());
///     assert_eq!(worker.join().unwrap(), Some("shop"));
///     assert_eq!(Context::child().run(|| APPS.pop()), Some("shop")); // a clone
///     assert_eq!(APPS.top(), Some("shop"));
/// });
/// ```
///
/// In a crate that re-exports context-local, so that its users need not depend on it, each
/// declaration says where the re-export is; a `macro_rules!` wrapper says it with `$crate`:
///
/// ```
/// mod framework {
///     pub use context_local as cl;
///
///     /// Declares a stack; its users' crates need no `context-local` dependency.
///     macro_rules! app_stack {
///         ($(#[$m:meta])* $vis:vis static $name:ident: $ty:ty) => {
///             $crate::framework::cl::context_stack!(
///                 #[crate = $crate::framework::cl]
///                 $(#[$m])* $vis static $name: $ty
///             );
///         };
///     }
///     pub(crate) use app_stack;
/// }
///
/// framework::cl::context_stack! {
///     /// Spans of the current request.
///     #[crate = crate::framework::cl]
///     pub static SPANS: &'static str;
/// }
/// framework::app_stack!(static APPS: &'static str);
///
/// fn main() {
///     APPS.scope("shop", || SPANS.scope("handler", || {
///         assert_eq!((APPS.top(), SPANS.top()), (Some("shop"), Some("handler")));
///     }));
/// }
/// ```
#[proc_macro]
pub fn context_stack(input: TokenStream) -> TokenStream {
    stack::expand(input.into()).into()
}
