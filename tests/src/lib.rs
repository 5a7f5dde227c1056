//! Test peers and harness for llmgate's integration tests: a fake OpenAI-compatible upstream
//! ([`fake`], with Anthropic's Messages API and Azure OpenAI's routes beside OpenAI's) and helpers that run the real `llmgate-dataplane` binary on loopback
//! ([`harness`]), a real OpenID Provider ([`oidc`]), real Redis servers ([`redis`]) and a webhook receiver ([`webhook`]).

pub mod fake;
pub mod harness;
pub mod oidc;
pub mod redis;
pub mod webhook;
