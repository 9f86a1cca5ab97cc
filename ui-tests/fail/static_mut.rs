use context_local::context_stack;

context_stack!(static mut JOBS: u32);

fn main() {
    JOBS.push(1);
}
