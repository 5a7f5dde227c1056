//! What the fake's handlers share: the key, the counters, the last request, the behaviour.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub chat: AtomicU64,
    pub embeddings: AtomicU64,
    pub unauthorized: AtomicU64,
    pub bad_requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose reader went away before the end: the cancellation reached us.
    pub streams_cancelled: AtomicU64,
    pub chunks_sent: AtomicU64,
    /// Chat requests whose handler was dropped before it answered: the caller (the gateway)
    /// hung up and the drop reached us.
    pub requests_aborted: AtomicU64,
    /// Chat requests being handled right now.
    pub in_flight: AtomicU64,
    /// Requests that asked for `stream_options.include_usage`.
    pub usage_requested: AtomicU64,
    /// What `bill-asked` reported as used: every sequence at its full asked length.
    pub prompt_tokens_billed: AtomicU64,
    pub completion_tokens_billed: AtomicU64,
    /// Entra ID tokens the fake's token endpoint issued.
    pub tokens_issued: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) api_key: String,
    pub(crate) stats: Arc<Stats>,
    pub(crate) last_request: std::sync::Mutex<Value>,
    /// A behaviour of the table that overrides the model id's.
    pub(crate) behave_as: std::sync::Mutex<Option<String>>,
    /// Access tokens issued by the fake's Entra ID token endpoint, which Azure routes accept.
    pub(crate) issued_tokens: std::sync::Mutex<Vec<String>>,
}

impl Shared {
    pub(crate) fn set_behaviour(&self, behaviour: Option<&str>) {
        if let Ok(mut b) = self.behave_as.lock() {
            *b = behaviour.filter(|b| !b.is_empty()).map(str::to_owned);
        }
    }

    /// The behaviour for a request for `model`.
    pub(crate) fn behaviour_for(&self, model: &str) -> String {
        self.behave_as
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .unwrap_or_else(|| model.to_owned())
    }
}
