use context_local::context_stack;

context_stack! {
    #[explicit_only]
    /// The spans of the current request.
    #[explicit_only]
    static SPANS: &'static str;
}

fn main() {
    SPANS.push("handler");
}
