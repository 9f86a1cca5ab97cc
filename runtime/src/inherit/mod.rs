//! Children inherit: [`Snapshot`] (capture, fork, run, wrap) and [`thread::spawn`].
//!
//! The storage side (frames, copy-on-write forks, the cached capture) is in
//! `context/inherit.rs`; this is what users call.

mod snapshot;
pub mod thread;

pub use snapshot::Snapshot;
