//! Test peers and harness for llmgate's integration tests: a fake OpenAI-compatible upstream
//! ([`fake`]) and helpers that run the real `llmgate-dataplane` binary on loopback
//! ([`harness`]), real Redis servers ([`redis`]) and a webhook receiver ([`webhook`]).

pub mod fake;
pub mod harness;
pub mod redis;
pub mod webhook;
