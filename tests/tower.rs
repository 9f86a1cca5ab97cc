//! `context_local::tower`: the layers' promises, each with a control that removes the layer
//! or flips its order and shows the failure.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use context_local::tower::ContextLayer;
use context_local::Local;
use tower_layer::Layer;
use tower_service::Service;

/// Polls `f` to completion on this thread (the futures here never wait).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A service whose `poll_ready` binds `local` (as a middleware might, carelessly) and whose
/// `call` answers with what the request sees there.
#[derive(Clone)]
struct BindsInPollReady {
    local: &'static Local<u64>,
    next: u64,
}

impl Service<()> for BindsInPollReady {
    type Response = Option<u64>;
    type Error = Infallible;
    type Future = Ready<Result<Option<u64>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.next += 1;
        self.local.set(self.next);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(self.local.get()))
    }
}

/// Drives `requests` requests through `service` (`poll_ready`, then `call`) on this thread;
/// returns what each request saw.
fn serve<S>(service: &mut S, requests: usize) -> Vec<Option<u64>>
where
    S: Service<(), Response = Option<u64>, Error = Infallible>,
{
    let mut cx = TaskContext::from_waker(Waker::noop());
    (0..requests)
        .map(|_| {
            assert!(service.poll_ready(&mut cx).is_ready());
            block_on(service.call(())).unwrap()
        })
        .collect()
}

/// Issue 17, fault 11: what the inner `poll_ready` binds stays in no context — neither the
/// worker thread's, nor (through inheritance) the next request's.
#[test]
fn poll_ready_binds_nothing_that_outlives_it() {
    static LEAK: Local<u64> = Local::named("LEAK").inheritable();
    let mut service = ContextLayer::new().layer(BindsInPollReady {
        local: &LEAK,
        next: 0,
    });
    let seen = std::thread::spawn(move || {
        let seen = serve(&mut service, 3);
        assert!(
            !LEAK.is_set(),
            "poll_ready's value stayed in the worker's context"
        );
        seen
    })
    .join()
    .unwrap();
    assert_eq!(seen, [None, None, None]);
    assert_eq!(LEAK.contexts(), 0);
}

/// The control: the bare service leaks what its `poll_ready` binds into every request.
#[test]
fn control_poll_ready_without_the_layer_leaks() {
    static LEAK: Local<u64> = Local::named("LEAK").inheritable();
    let mut service = BindsInPollReady {
        local: &LEAK,
        next: 0,
    };
    let seen = std::thread::spawn(move || serve(&mut service, 3))
        .join()
        .unwrap();
    assert_eq!(seen, [Some(1), Some(2), Some(3)]);
}
