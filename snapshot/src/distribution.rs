//! The wire protocol between the operator and the data planes.
//!
//! A data plane opens one long-lived `GET {WATCH_PATH}?node=<name>&have=<version>` with
//! `Authorization: Bearer <token>`. The answer is newline-delimited JSON, one [`Message`] per
//! line: first the current snapshot (or [`Message::Current`] when `have` is already current),
//! then every new version as it is compiled, and a heartbeat every [`HEARTBEAT_SECS`] seconds so
//! both ends notice a dead connection. After applying a snapshot the data plane reports with
//! `POST {ACK_PATH}` and an [`Ack`] body.

use serde::{Deserialize, Serialize};

use crate::Snapshot;

pub const WATCH_PATH: &str = "/v1/snapshots/watch";
pub const ACK_PATH: &str = "/v1/snapshots/ack";
/// Seconds between heartbeats; a data plane that hears nothing for three of them reconnects.
pub const HEARTBEAT_SECS: u64 = 10;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    Snapshot {
        snapshot: Box<Snapshot>,
    },
    /// The data plane already has this version.
    Current {
        version: String,
    },
    Heartbeat,
}

/// What a data plane reports after a snapshot arrived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub node: String,
    /// The version the data plane now serves.
    pub version: String,
    /// Whether the received snapshot was applied; false with `error` when it was refused.
    pub applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The data plane's own view of its health when it acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Ready to serve (has a snapshot, not draining).
    pub ready: bool,
    /// Models it serves.
    pub models: usize,
    /// Requests being served right now.
    pub in_flight: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_lines() {
        let m = Message::Current {
            version: "sha256:00".into(),
        };
        let line = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(line, r#"{"type":"current","version":"sha256:00"}"#);
        let snap = Message::Snapshot {
            snapshot: Box::new(Snapshot::empty()),
        };
        let back: Message = serde_json::from_str(&serde_json::to_string(&snap).unwrap_or_default())
            .expect("round trip");
        assert_eq!(back, snap);
        assert_eq!(
            serde_json::to_string(&Message::Heartbeat).unwrap_or_default(),
            r#"{"type":"heartbeat"}"#
        );
    }
}
