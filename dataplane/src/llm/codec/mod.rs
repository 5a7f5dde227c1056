//! Stream framings upstreams answer in: Server-Sent Events ([`sse`]).

pub mod sse;
