use context_local::context_local;
use std::rc::Rc;

#[context_local]
struct Session {
    id: u64,
    shared: Rc<String>,
}

fn main() {}
