use context_local::context_stack;

context_stack! {
    static JOBS: u32
    static DEPTH: u32;
}

fn main() {
    JOBS.push(1);
    DEPTH.push(1);
}
