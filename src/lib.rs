//! varco — an identity gateway for Italian public-administration backends.
//!
//! A reverse proxy that lets a request through only when its user is authenticated at the
//! level, role and delegation the route demands, and tells the backend who the user is
//! with a signed header. See `DESIGN.md` for the request path; each module owns one concept.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
#[cfg(test)]
mod architecture;
pub mod assertion;
pub mod civil;
pub mod cns;
pub mod config;
pub mod demo;
pub mod error;
pub mod escape;
pub mod gateway;
pub mod healthcheck;
pub mod identity;
pub mod ids;
pub mod oidc;
pub mod pages;
pub mod pem;
pub mod pin;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod saml;
pub mod server;
pub mod session;
pub mod telemetry;

/// The boxed error type used where errors of several libraries meet (bodies, IO).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
