use context_local::Context;

fn spawn<F: std::future::Future + Send + 'static>(_task: F) {}

async fn handle() {}

fn main() {
    spawn(async {
        let request = Context::new();
        let _entered = request.enter();
        handle().await;
    });
}
