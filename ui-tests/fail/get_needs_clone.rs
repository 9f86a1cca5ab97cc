use context_local::context_local;

#[context_local]
struct Secret(String);

fn main() {
    let _ = Secret::get();
}
