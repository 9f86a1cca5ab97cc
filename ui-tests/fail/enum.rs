use context_local::context_local;

#[context_local]
enum Mode {
    Fast,
    Slow,
}

fn main() {}
