//! The llmgate custom resources (`llmgate.dev/v1alpha1`) and the pure function that compiles
//! them into a [`llmgate_snapshot::Snapshot`].
//!
//! Shared by the operator and the data plane's standalone mode, so both read the same YAML the
//! same way and compile it identically.
//!
//! - [`resources`]: the spec types users write in Git, one file per kind.
//! - [`object`]: a resource as compile reads it (name, namespace, labels and spec).
//! - [`parse`]: multi-document YAML text → typed resources, with the file and field of any error.
//! - [`compile`]: resources (+ resolved secrets) → snapshot and per-resource errors, one file per
//!   kind. No I/O.
//! - [`files`]: a directory of YAML → snapshot, for everything that reads files.
//! - `status` (feature `kube`): compile errors → the `Accepted` / `ResolvedRefs` / `Ready`
//!   conditions of each resource, only where they changed.
//!
//! Feature `kube` adds the `CustomResource` types the API server stores (`ModelEndpoint`, …),
//! from which the CRD manifests are generated, and the status conditions. Without it this crate
//! links no Kubernetes client code, which is how the data plane builds it.

pub mod compile;
pub mod duration;
pub mod files;
pub mod object;
pub mod parse;
pub mod resources;
pub mod saml_metadata;
#[cfg(feature = "kube")]
pub mod status;

pub use compile::{
    CompileError, Compiled, Reason, Resources, SecretKeyRef, ServiceBackend, ServiceKey, compile,
};
pub use object::{Metadata, Object};
pub use parse::{ParseError, Resource, parse_documents};
#[cfg(feature = "kube")]
pub use resources::{
    AccessPolicy, ApiKey, GatewayTokens, IdentityProvider, ModelEndpoint, TeamBudget,
};
pub use resources::{
    AccessPolicySpec, ApiKeySpec, GatewayTokensSpec, IdentityProviderSpec, ModelEndpointSpec,
    TeamBudgetSpec,
};

/// The API group of every llmgate resource.
pub const GROUP: &str = "llmgate.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";
