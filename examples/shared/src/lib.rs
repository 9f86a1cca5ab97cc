//! The load both RPC examples put on their server (actix-service, tonic-service): `n` calls
//! at once, each from its own context, and the check of what the server saw. A crate of its
//! own, so that neither example depends on the other.

use std::future::Future;
use std::time::Duration;

use context_local::FutureExt;

/// Worker threads of the client runtime: fewer than the calls, so that calls share threads
/// and a value leaking from one call's context to the next would show.
const CLIENT_WORKERS: usize = 2;

/// Runs `fire` on a client runtime of its own and drops the runtime after, which closes the
/// client's connections (a graceful server shutdown then finishes).
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn on_client_runtime<R>(fire: impl Future<Output = R>) -> R {
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(CLIENT_WORKERS)
        .enable_all()
        .build()
        .expect("a client runtime");
    clients.block_on(fire)
}

/// Runs `call(i)` for every `i` in `0..n` at once, each on its own tokio task and in its own
/// context (`in_new_context`: what one call sets no other sees); their outputs, in order.
///
/// # Errors
///
/// A call that panicked, or the calls taking longer than `timeout`.
pub async fn concurrently<F>(
    n: usize,
    timeout: Duration,
    call: impl Fn(usize) -> F,
) -> Result<Vec<F::Output>, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let calls = async {
        let tasks: Vec<_> = (0..n)
            .map(|i| tokio::spawn(call(i).in_new_context()))
            .collect();
        let mut outputs = Vec::with_capacity(n);
        for task in tasks {
            outputs.push(task.await.map_err(|e| e.to_string())?);
        }
        Ok(outputs)
    };
    tokio::time::timeout(timeout, calls)
        .await
        .map_err(|_| format!("{n} calls were not done within {timeout:?}"))?
}

/// The calls `check` finds wrong (`check(call, i)` for call `i`), one line each.
pub fn wrong_replies<C>(
    calls: &[C],
    check: impl Fn(&C, usize) -> Result<(), String>,
) -> Vec<String> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, call)| check(call, i).err())
        .collect()
}

/// Checks what the server saw, one `(request id, places)` per call it served: one entry per
/// call `0..n` (found by `request_id(i)`), each seeing `own(i)` at every place. The wrong or
/// missing entries, one line each.
pub fn check_seen<'a>(
    seen: impl IntoIterator<Item = (&'a str, &'a [String])>,
    n: usize,
    request_id: impl Fn(usize) -> String,
    own: impl Fn(usize) -> String,
) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(&request_id).collect();
    let mut wrong = Vec::new();
    let mut found = vec![false; n];
    for (id, places) in seen {
        let Some(i) = ids.iter().position(|own_id| own_id == id) else {
            wrong.push(format!("a call nobody made: {id:?} saw {places:?}"));
            continue;
        };
        if std::mem::replace(&mut found[i], true) {
            wrong.push(format!("call {i} seen twice"));
        }
        let own = format!(": {}", own(i));
        if places.iter().any(|p| !p.ends_with(&own)) {
            wrong.push(format!("call {i}: the server saw {places:?}"));
        }
    }
    wrong.extend(
        (0..n)
            .filter(|&i| !found[i])
            .map(|i| format!("call {i} never reached the handler")),
    );
    wrong
}
