use context_local::context_local;
use std::cell::Cell;

#[context_local(inherit)]
#[derive(Clone)]
struct Counter {
    hits: Cell<u32>,
}

fn main() {
    Counter::set(Counter { hits: Cell::new(0) });
}
