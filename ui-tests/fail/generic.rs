use context_local::context_local;

#[context_local]
struct Wrapper<T> {
    value: T,
}

fn main() {}
