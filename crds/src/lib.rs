//! The llmgate custom resources (`llmgate.dev/v1alpha1`) and the pure function that compiles
//! them into a [`llmgate_snapshot::Snapshot`].
//!
//! Shared by the operator, the data plane's standalone mode and the CLI, so all three read the
//! same YAML the same way and compile it identically.
//!
//! - [`resources`]: the user-facing types, as written in Git and stored by the API server.
//! - [`parse`]: multi-document YAML text → typed resources, with the file and field of any error.
//! - [`compile`]: resources (+ resolved secrets) → snapshot and per-resource errors. No I/O.
//! - [`files`]: a directory of YAML → snapshot, for everything that reads files.
//! - [`status`]: compile errors → the `Accepted` / `ResolvedRefs` / `Ready` conditions of each
//!   resource, only where they changed.

pub mod compile;
pub mod duration;
pub mod files;
pub mod parse;
pub mod resources;
pub mod saml_metadata;
pub mod status;

pub use compile::{
    CompileError, Compiled, Reason, Resources, SecretKeyRef, ServiceBackend, ServiceKey, compile,
};
pub use parse::{ParseError, Resource, parse_documents};
pub use resources::{
    AccessPolicy, AccessPolicySpec, ApiKey, ApiKeySpec, GatewayTokens, GatewayTokensSpec,
    IdentityProvider, IdentityProviderSpec, ModelEndpoint, ModelEndpointSpec, TeamBudget,
    TeamBudgetSpec,
};

/// The API group of every llmgate resource.
pub const GROUP: &str = "llmgate.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
