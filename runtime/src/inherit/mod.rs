//! Children inherit: [`Snapshot`] (capture, fork, run, wrap) and [`thread::spawn`].
//!
//! The storage side is in `context/`: frames and what a fork inherited in `frame.rs`, a
//! context's captures (cached) and the reads of its inherited frame in `capture.rs`. This is
//! what users call.

mod snapshot;
pub mod thread;

pub use snapshot::Snapshot;
