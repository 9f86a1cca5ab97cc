use context_local::context_stack;

context_stack!(#[crate = ::context_local, default] static JOBS: u32);

fn main() {
    JOBS.push(1);
}
