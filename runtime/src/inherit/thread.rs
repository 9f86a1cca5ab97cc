//! Threads that start with their parent's inheritable values, and a check of a thread's own
//! context.

use super::Snapshot;

pub use crate::explicit::bound_in_own_context;

/// [`std::thread::spawn`], with the new thread running `f` in a fork of the caller's
/// [`Snapshot`] (captured now): it sees the caller's inheritable locals and stacks as they
/// are at this call, and its own writes stay its own.
///
/// # Panics
///
/// As [`std::thread::spawn`], and as [`Snapshot::capture`].
///
/// # Examples
///
/// ```
/// use context_local::{thread, Local};
///
/// static USER: Local<String> = Local::named("USER").inheritable();
///
/// USER.set("ada".into());
/// let child = thread::spawn(|| {
///     let seen = USER.get();
///     USER.set("child".into()); // the child's own
///     seen
/// });
/// assert_eq!(child.join().unwrap().as_deref(), Some("ada"));
/// assert_eq!(USER.get().as_deref(), Some("ada"));
/// ```
#[track_caller]
pub fn spawn<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(Snapshot::capture().wrap(f))
}
