use context_local::context_stack;

/// A handle that may be shared between threads but not moved to another.
#[derive(Clone)]
struct Handle(*const ());
unsafe impl Sync for Handle {}

context_stack!(#[inherit] static HANDLES: Handle);

fn main() {}
