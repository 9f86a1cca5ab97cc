use context_local::context_local;

fn make() -> Request {
    Request { id: 0 }
}

#[context_local(default, init = make)]
#[derive(Default)]
struct Request {
    id: u64,
}

fn main() {
    Request::set(Request { id: 1 });
}
