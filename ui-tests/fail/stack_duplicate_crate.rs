use context_local::context_stack;

context_stack! {
    #[crate = ::context_local]
    #[crate = ::context_local]
    static JOBS: u32;
}

fn main() {
    JOBS.push(1);
}
