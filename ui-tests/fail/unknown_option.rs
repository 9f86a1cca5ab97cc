use context_local::context_local;

#[context_local(defualt)]
#[derive(Default)]
struct Request {
    id: u64,
}

fn main() {
    Request::set(Request { id: 1 });
}
