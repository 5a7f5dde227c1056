//! A webhook receiver: records every JSON body POSTed to it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app =
            Router::new()
                .route(
                    "/hook",
                    post(
                        |State(r): State<Arc<Mutex<Vec<Value>>>>,
                         axum::Json(v): axum::Json<Value>| async move {
                            r.lock().expect("receiver lock").push(v);
                            "ok"
                        },
                    ),
                )
                .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("receiver lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
