//! SPID/CIE SAML service provider (issue 4). This file holds the parts that need no XML
//! library and that every message passes first; the samael-based response validation
//! builds on them.
//!
//! - [`prefilter`]: size cap, UTF-8, no DTD or entity declaration — before any XML parser
//!   sees the bytes.
//! - [`redirect`]: the HTTP-Redirect binding — DEFLATE with an inflate cap, and the
//!   signature over the raw query string (signing our requests, verifying IdP messages).
//! - [`status`]: SPID/CIE error codes (`ErrorCode nrNN`) and their user-facing messages.

pub mod authn_request;
pub mod certificate;
pub mod config;
pub mod issuer;
pub mod metadata;
pub mod prefilter;
pub mod redirect;
pub mod response;
pub mod sp;
pub mod sp_metadata;
pub mod status;
pub mod time;
pub mod xmldsig;
