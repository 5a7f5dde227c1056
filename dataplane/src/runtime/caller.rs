//! The caller of one request, as the stages after auth read it: an API key (its decisions,
//! `/v1/models` body and limits precomputed per snapshot) or a verified token (decided per
//! request).

use std::sync::Arc;

use bytes::Bytes;
use llmgate_snapshot::{Endpoint, Principal};
use serde_json::json;

use super::{Runtime, model_object};
use crate::identity::Identity;
use crate::pipeline::policy::{self, Decision};

/// The caller of one request: an API key (everything precomputed per snapshot) or a verified
/// token (decided per request).
pub enum Caller<'r> {
    Key(&'r KeyRt),
    Token(Box<TokenCaller>),
}

pub struct TokenCaller {
    pub identity: Identity,
    pub tag: Arc<str>,
    pub limits: Vec<usize>,
}

impl Caller<'_> {
    pub fn identity(&self) -> &Identity {
        match self {
            Caller::Key(k) => &k.identity,
            Caller::Token(t) => &t.identity,
        }
    }

    /// Hash tag of the caller's counters (`t:<team>`).
    pub fn tag(&self) -> &Arc<str> {
        match self {
            Caller::Key(k) => &k.tag,
            Caller::Token(t) => &t.tag,
        }
    }

    /// The rate limits whose subjects include this caller.
    pub fn limits(&self) -> &[usize] {
        match self {
            Caller::Key(k) => &k.limits,
            Caller::Token(t) => &t.limits,
        }
    }

    /// The policy decision on endpoint `i`.
    pub fn decision(&self, rt: &Runtime, i: usize) -> Decision {
        match self {
            Caller::Key(k) => k.decisions[i].clone(),
            Caller::Token(t) => policy::decide(
                &rt.snapshot.policies,
                &t.identity,
                &rt.snapshot.endpoints[i],
            ),
        }
    }

    /// The `GET /v1/models` body: only what this caller may use.
    pub fn models_body(&self, rt: &Runtime) -> Bytes {
        match self {
            Caller::Key(k) => k.models_body.clone(),
            Caller::Token(_) => {
                let allowed: Vec<bool> = (0..rt.endpoints.len())
                    .map(|i| self.decision(rt, i).allowed)
                    .collect();
                models_body(&rt.snapshot.endpoints, &allowed, rt.loaded_at)
            }
        }
    }

    /// How the caller is named in a 403.
    pub fn describe(&self) -> String {
        let who = self.identity();
        match (&who.key_id, &who.principal) {
            (Some(k), _) => format!("API key {k}"),
            (None, Principal::User(u)) => format!("user {u}"),
            (None, Principal::ServiceAccount(s)) => format!("service account {s}"),
        }
    }
}

pub(super) fn models_body(endpoints: &[Endpoint], allowed: &[bool], loaded_at: i64) -> Bytes {
    let data: Vec<_> = endpoints
        .iter()
        .zip(allowed)
        .filter(|(_, a)| **a)
        .map(|(ep, _)| model_object(ep, loaded_at))
        .collect();
    Bytes::from(serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default())
}

pub(crate) fn team_tag(team: Option<&str>) -> Arc<str> {
    Arc::from(format!("t:{}", team.unwrap_or("-")))
}

pub struct KeyRt {
    pub digest: [u8; 32],
    pub identity: Identity,
    /// Decision per endpoint index.
    pub decisions: Vec<Decision>,
    /// The `GET /v1/models` body for this key.
    pub models_body: Bytes,
    /// Hash tag of the caller's counters (`t:<team>`): a caller's limits and budgets share
    /// one Redis Cluster slot, so one call covers them.
    pub tag: Arc<str>,
    /// The rate limits whose subjects include this caller.
    pub limits: Vec<usize>,
}
