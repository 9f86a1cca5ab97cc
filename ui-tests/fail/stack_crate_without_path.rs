use context_local::context_stack;

context_stack!(#[crate] static JOBS: u32);

fn main() {
    JOBS.push(1);
}
