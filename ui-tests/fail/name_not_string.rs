use context_local::context_local;

#[context_local(name = REQUEST)]
struct Request {
    id: u64,
}

fn main() {
    Request::set(Request { id: 1 });
}
