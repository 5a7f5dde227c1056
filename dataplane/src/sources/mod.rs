//! Where snapshots come from; each source ends in [`crate::gateway::Gateway::apply`] (or
//! `reject`), the one place the runtime is swapped:
//!
//! - [`dir`]: standalone mode, a directory of llmgate YAML (or the embedded quickstart)
//!   compiled in-process, and its file watcher;
//! - [`operator`]: operator mode, the operator's snapshot stream, kept in the state directory
//!   ([`kept`]).

pub mod dir;
pub mod kept;
pub mod operator;
