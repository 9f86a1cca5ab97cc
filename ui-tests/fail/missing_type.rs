use context_local::context_stack;

context_stack!(static JOBS);

fn main() {}
