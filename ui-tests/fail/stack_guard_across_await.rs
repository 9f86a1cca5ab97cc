use context_local::LocalStack;

static SPANS: LocalStack<&str> = LocalStack::named("SPANS");

fn spawn<F: std::future::Future + Send + 'static>(_task: F) {}

async fn call_the_database() {}

fn main() {
    spawn(async {
        let _span = SPANS.enter("db");
        call_the_database().await;
    });
}
