//! "A push/pop cycle of one element allocates nothing, even though the last pop releases the
//! entry" — counted, not assumed. Its own test binary: the global allocator counts for the whole
//! process, so nothing else may run alongside.

use context_local::{Local, LocalStack};
use context_local_alloc_counter::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

static S: LocalStack<u64> = LocalStack::named("S");
static L: Local<u64> = Local::named("L");

#[test]
fn hot_paths_do_not_allocate_after_first_use() {
    // First use: the thread's context, the slots, the small buffers of the stack and of its
    // guard registry.
    S.push(0);
    S.pop();
    drop(S.enter(0));
    L.set(0);
    let before = CountingAlloc::allocations();
    for i in 0..10_000u64 {
        S.push(i);
        assert_eq!(S.pop(), Some(i));
        // Release-on-pop, without freeing: the entry no longer counts.
        assert!(S.is_empty());
        assert_eq!(S.contexts(), 0);
        S.scope(i, || L.with(|v| *v));
        drop(S.enter(i));
        L.set(i);
        assert_eq!(L.with(|v| *v), i);
    }
    assert_eq!(
        CountingAlloc::allocations() - before,
        0,
        "the hot paths allocated"
    );
}
