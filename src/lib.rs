//! mailpolicyd: a caching sidecar that answers mail filters' DMARC, SPF, DKIM-key, ATPS and
//! TLSA questions with pre-parsed policies, so a filter does no DNS and no parsing per message.
//!
//! # Layout
//!
//! ```text
//!  operator ──argv──▶ main.rs ──▶ report            (`parse`: records → JSON, no DNS)
//!
//!                     resolve::Resolver              the engine: one method per question
//!        ┌──────────────┬─────┴────────┬───────────────────┐
//!        ▼              ▼              ▼                   ▼
//!  resolve::discover  resolve::limit  resolve::stats     orgdomain
//!  (DMARC: PSL,       (governor per   (counters the      (PSL org domain,
//!   tree walk, both)   org, wildcard   admin endpoint     RFC 9989 walk names
//!        │             watch)          will read)         and selection)
//!        ▼
//!  resolve::cache   moka: TTL and negative entries, prefetch, serve-stale, coalescing
//!        ▼
//!  resolve::answer  upstream answer → parsed policy (calls `policy`)
//!        ▼
//!  resolve::upstream  hickory-resolver (cache off; DNSSEC-validating twin for TLSA)
//!
//!  policy::{dmarc, spf, dkim, atps, tlsa}  pure parsers (policy::tag: the tag=value lexer)
//! ```
//!
//! Data flows one way: `policy` imports nothing from the rest of the crate and does no I/O;
//! `orgdomain` is pure too; `resolve` knows nothing of sockets; only `resolve::upstream` talks
//! to DNS, and it never parses record text (`resolve::answer` hands it to `policy`).
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod orgdomain;
pub mod policy;
pub mod proto;
pub mod report;
pub mod resolve;
pub mod serve;
