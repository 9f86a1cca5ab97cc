//! Every log line carries the request: context locals as fields of every `tracing` event
//! (feature `tracing`).
//!
//! Declare once which locals go on log lines, under which names and how they are rendered
//! ([`ContextFields`]), and add them to tracing-subscriber's fmt subscriber or layer in one
//! call ([`ContextFieldsExt::with_context_fields`]). From then on every event emitted while
//! those locals are bound carries them: in the text formats after the event's own fields, in
//! JSON as top-level members (`{"request_id":7,"tenant":"acme","timestamp":...}`), whether
//! the event's fields are flattened or not. An event emitted where none is bound carries none
//! of them, and costs one read per declared field more than it did.
//!
//! Values are read where the event is emitted, in the context current there. With
//! [`ContextLayer`](crate::tower::ContextLayer) outermost each request has its own context;
//! children started with this crate's spawn helpers — [`crate::tokio::spawn`],
//! [`crate::tokio::spawn_blocking`], [`crate::rayon`], [`crate::thread::spawn`] — start
//! from a snapshot of it, so their events carry the request's (inheritable) values too. With
//! this feature on, those helpers also carry the current `tracing` span into the child, so
//! span fields follow children as well (tracing #1391).
//!
//! Unlike a span holding the same fields, the locals need no declaring at a span callsite
//! (tracing #1343), are top-level in JSON (tracing #2670), have no cap of 32, and follow the
//! request into children without `.instrument(..)` at every spawn.
//!
//! # Examples
//!
//! ```
//! use context_local::tracing::{ContextFields, ContextFieldsExt};
//! use context_local::{context_local, Context};
//! # use std::sync::{Arc, Mutex};
//! # #[derive(Clone, Default)]
//! # struct Buf(Arc<Mutex<Vec<u8>>>);
//! # impl std::io::Write for Buf {
//! #     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
//! #     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! # }
//! # let out = Buf::default();
//! # let writer = { let out = out.clone(); move || out.clone() };
//!
//! #[context_local(inherit)]
//! #[derive(Clone)]
//! pub struct Request { pub id: u64, pub tenant: String }
//!
//! let fields = ContextFields::builder()
//!     .value("request_id", Request::proxy().map(|r| &r.id))
//!     .display("tenant", Request::proxy().map(|r| r.tenant.as_str()))
//!     .build();
//! let subscriber = tracing_subscriber::fmt()
//!     .json()
//!     .without_time()
//!     .with_writer(writer)
//!     .with_context_fields(&fields)
//!     .finish();
//!
//! tracing::subscriber::with_default(subscriber, || {
//!     Context::new().run(|| {
//!         Request::set(Request { id: 7, tenant: "acme".into() });
//!         tracing::info!("handled");
//!     });
//!     tracing::info!("idle");
//! });
//! # let out = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
//! # let lines: Vec<&str> = out.lines().collect();
//! assert_eq!(
//!     lines[0],
//!     r#"{"request_id":7,"tenant":"acme","level":"INFO","fields":{"message":"handled"},"target":"rust_out"}"#
//! );
//! assert_eq!(
//!     lines[1],
//!     r#"{"level":"INFO","fields":{"message":"idle"},"target":"rust_out"}"#
//! );
//! ```

mod fields;
mod format;
#[cfg(feature = "log")]
mod log;
#[cfg(feature = "opentelemetry-sdk")]
mod otel;
mod setup;

pub use fields::{ContextFields, ContextFieldsBuilder};
pub use format::{ContextEventFormat, ContextFieldFormat};
#[cfg(feature = "log")]
pub use log::ContextLogger;
#[cfg(feature = "opentelemetry-sdk")]
pub use otel::ContextSpanProcessor;
pub use setup::{ContextFieldsExt, Style};
