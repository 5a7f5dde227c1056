//! Sources of desired state. Each reads resources from somewhere and hands every change to
//! [`crate::compile::publish`]. A Kubernetes watch source is the next one.

pub mod dir;
