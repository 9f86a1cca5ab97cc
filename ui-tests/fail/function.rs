use context_local::context_local;

#[context_local]
fn current_user() -> String {
    String::new()
}

fn main() {}
