//! HTTP plumbing: the API router ([`api`]), bounded reads of caller bodies ([`body`]), the accept loop with graceful shutdown ([`server`]),
//! the admin server ([`admin`]), the pooled upstream client ([`client`]) and URL encoding
//! ([`url`]).

pub mod admin;
pub mod api;
pub mod body;
pub mod client;
pub mod server;
pub mod url;

pub use api::api_router;
