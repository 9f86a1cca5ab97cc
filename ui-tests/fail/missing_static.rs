use context_local::context_stack;

context_stack!(pub JOBS: u32);

fn main() {}
