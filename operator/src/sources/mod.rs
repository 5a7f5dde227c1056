//! Sources of desired state. Each reads resources from somewhere and hands every change to
//! [`crate::compile::publish`]: `kubernetes` (the API server) or `dir` (a directory of YAML).

pub mod dir;
pub mod kubernetes;
