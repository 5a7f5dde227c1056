//! A webhook receiver: records every JSON body POSTed to it; [`Receiver::failing`] answers the
//! first posts with 500, to exercise the sender's retries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Value>>>,
    posts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Hook {
    received: Arc<Mutex<Vec<Value>>>,
    posts: Arc<AtomicUsize>,
    fail_first: usize,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::failing(0).await
    }

    /// Answers the first `n` posts with 500 (not recorded), the rest with 200.
    pub async fn failing(n: usize) -> Receiver {
        let hook = Hook {
            received: Arc::default(),
            posts: Arc::default(),
            fail_first: n,
        };
        let (received, posts) = (Arc::clone(&hook.received), Arc::clone(&hook.posts));
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State(h): State<Hook>, axum::Json(v): axum::Json<Value>| async move {
                        if h.posts.fetch_add(1, Ordering::Relaxed) < h.fail_first {
                            return (http::StatusCode::INTERNAL_SERVER_ERROR, "down");
                        }
                        h.received.lock().expect("receiver lock").push(v);
                        (http::StatusCode::OK, "ok")
                    },
                ),
            )
            .with_state(hook);
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
            posts,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("receiver lock").clone()
    }

    /// Every post, answered or refused.
    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
