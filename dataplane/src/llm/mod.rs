//! The LLM wire formats and their translation: the canonical OpenAI-shaped types ([`types`]),
//! prompt-token estimates ([`tokenize`]), stream codecs ([`codec`]) and the provider adapters
//! ([`providers`]) that turn the canonical request into an upstream request and the upstream's
//! answer back.
//!
//! Everything here is pure: no clock, no network, no credentials (those live in
//! [`crate::backend_auth`]), so translations are tested with fixtures alone.

pub mod codec;
pub mod providers;
pub mod tokenize;
pub mod types;
