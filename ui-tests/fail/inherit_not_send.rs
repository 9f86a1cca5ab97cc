use context_local::context_local;

/// A handle that may be shared between threads but not moved to another.
#[derive(Clone)]
struct Handle(*const ());
unsafe impl Sync for Handle {}

#[context_local(inherit)]
#[derive(Clone)]
struct Session {
    handle: Handle,
}

fn main() {
    Session::set(Session { handle: Handle(std::ptr::null()) });
}
