use context_local::context_stack;

context_stack! {
    #[inherit]
    /// The apps of the current request.
    #[inherit]
    static APPS: &'static str;
}

fn main() {
    APPS.push("shop");
}
