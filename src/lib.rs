//! mailpolicyd: a caching sidecar that answers mail filters' DMARC, SPF, DKIM-key, ATPS and
//! TLSA questions with pre-parsed policies, so a filter does no DNS and no parsing per message.
//!
//! # Layout
//!
//! ```text
//!  operator ──argv──▶ main.rs ──▶ report      (the `parse` command: records → JSON)
//!                                   │
//!                                   ▼
//!                 policy::{dmarc, spf, dkim, atps, tlsa}   pure parsers: text in,
//!                 (policy::tag: the shared tag=value lexer)  typed policy + diagnostics out
//!                                   ▲
//!                 orgdomain          │ (Psd)
//!                 (PSL org domain, RFC 9989 tree-walk names and org-domain selection)
//! ```
//!
//! Data flows one way: `policy` imports nothing from the rest of the crate and does no I/O;
//! `orgdomain` is pure too and only borrows `policy::dmarc::Psd`; `report` renders both for the
//! command line. The resolver, cache and socket server of `../shared/DESIGN.md` build on these
//! and are described in `ARCHITECTURE.md` as they land.
#![forbid(unsafe_code)]

pub mod orgdomain;
pub mod policy;
pub mod report;
pub mod resolve;
