//! Values that cross processes: chosen context locals travel with a request to the services it
//! calls as W3C Baggage (the `baggage` header), and are restored there into the same locals.
//!
//! - [`Local::baggage`](crate::Local::baggage) (or `#[context_local(baggage = "key")]`) opts a
//!   local in, with its key; its value type is a [`BaggageValue`] (every `Display + FromStr`);
//! - a [`Propagator`] lists the locals, [`inject`](Propagator::inject)s their values into an
//!   outgoing request's headers ([`Injector`]) and [`extract`](Propagator::extract)s them from an
//!   incoming one's ([`Extractor`]) into a [`Snapshot`](crate::Snapshot) to fork per request;
//! - a struct can send chosen fields as members of their own ([`BaggageFields`],
//!   `#[baggage = "key"]` on the fields of a `#[context_local]` struct,
//!   [`Propagator::with_fields`]);
//! - [`Propagator::of`] builds one in `const`, for a `static` without `LazyLock`.

mod carried;
mod carrier;
mod codec;
mod error;
mod fields;
mod limits;
#[cfg(feature = "opentelemetry")]
mod otel;
mod propagator;
mod value;
#[cfg(feature = "opentelemetry")]
mod watch;

pub use carried::Carried;
pub use carrier::{Extractor, Injector};
#[cfg(feature = "opentelemetry")]
pub use codec::__safe_members;
pub use error::BaggageError;
pub use fields::BaggageFields;
pub use limits::{MAX_BYTES, MAX_MEMBERS};
pub use propagator::{Extracted, Propagator, HEADER};
pub use value::BaggageValue;
#[cfg(feature = "opentelemetry")]
pub use watch::{__carried_keys_during, __written_by_ours};
