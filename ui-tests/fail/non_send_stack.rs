use context_local::context_stack;
use std::rc::Rc;

context_stack!(static SHARED: Rc<String>);

fn main() {}
