//! Futures driven by hand, one poll at a time, on the calling thread: the tests decide which
//! context each poll runs in.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context as TaskContext, Poll, Waker};

/// Pending once, then ready: a `.await` that gives the executor back.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// One poll of `fut` with a waker that does nothing (the test polls again itself).
pub fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = TaskContext::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

/// Polls `fut` on this thread until it is ready (every future the tests give it wakes itself or
/// is ready, so a waker that does nothing is enough).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = poll_once(fut.as_mut()) {
            return v;
        }
    }
}
