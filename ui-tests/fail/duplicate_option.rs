use context_local::context_local;

#[context_local(name = "A", name = "B")]
struct Request {
    id: u64,
}

fn main() {
    Request::set(Request { id: 1 });
}
