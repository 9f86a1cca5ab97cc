use context_local::context_stack;

context_stack!(static JOBS: u32 = Vec::new());

fn main() {
    JOBS.push(1);
}
