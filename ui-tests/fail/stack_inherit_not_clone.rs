use context_local::context_stack;

struct App {
    name: String,
}

context_stack!(#[inherit] pub static APPS: App);

fn main() {
    APPS.push(App { name: "shop".into() });
}
