use context_local::context_local;

#[context_local(default)]
struct Request {
    id: u64,
}

fn main() {}
