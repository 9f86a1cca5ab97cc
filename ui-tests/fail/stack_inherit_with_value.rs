use context_local::context_stack;

context_stack!(#[inherit(x)] static APPS: &'static str);

fn main() {
    APPS.push("shop");
}
