//! mailpolicyd: a caching sidecar that answers mail filters' DMARC, SPF, DKIM-key, ATPS and
//! TLSA questions with pre-parsed policies, so a filter does no DNS and no parsing per message.
//!
//! # Layout
//!
//! ```text
//!  filter ──unix socket──▶ serve::socket ─┐   (proto::frame: the one frame codec, shared with client, CLI, load test)
//!  filter ──DNS on lo────▶ serve::dns ────┤
//!  Postfix ─policy lines─▶ serve::postfix ┤   (proto::postfix_policy: request lines, actions; SPF per RCPT)
//!  operator ──HTTP───────▶ serve::admin   │   (/live, /ready, /metrics: reads counters)
//!  cli ──▶ config ──▶ serve::daemon ──────┤   (DaemonConfig; signals, drain, snapshot)
//!                                         ▼
//!                     resolve::Resolver              the engine: one method per question
//!        ┌──────────────┬─────┴────────┬───────────────────┐
//!        ▼              ▼              ▼                   ▼
//!  resolve::discover  resolve::limit  resolve::stats     policy::orgdomain
//!  (DMARC: PSL,       (governor per   (counters)         (PSL org domain,
//!   tree walk, both)   org, wildcard                      RFC 9989 walk names
//!        │             watch)                             and selection)
//!        ▼
//!  resolve::cache   quick_cache, byte-bounded: negative entries, prefetch, serve-stale,
//!        │          coalescing; parsed answers in compact form (cache::cold), held parsed
//!        │          only on a bounded hot list (cache::entry)
//!        │          (resolve::snapshot: persisted on shutdown, reloaded on start)
//!        ▼
//!  resolve::answer  upstream answer → model::Answer, parsed (calls `policy`)
//!        ▼
//!  resolve::upstream  hickory-resolver (cache off; DNSSEC per [dnssec] mode for TLSA, DKIM keys)
//!
//!  resolve::spf (check_host) and resolve::evaluate (DMARC verdict) ask through lookup()
//!  resolve::lookup: the lookup/miss/fetch path (org domain once per miss); resolve::wildcard:
//!  its wildcard glue; resolve::error: ResolveError; resolve::name: AsName (text or DomainName in)
//!  policy::{dmarc, spf, dkim, atps, tlsa, orgdomain, trust_anchor}  pure parsers (policy::tag: the tag=value lexer;
//!                                          policy::scan: byte-class bitmaps)
//!  client: async and blocking socket clients (the CLI's `cli::*` modules live in the binary)
//!  model: the value types the resolver answers and proto carries (answer, dmarc, spf, stats,
//!         name: the one DomainName, validated once where a name enters)
//! ```
//!
//! Data flows one way: `policy` imports nothing from the rest of the crate and does no I/O;
//! `proto` and `model` (the wire contract) import nothing from `resolve` or `serve`: `model`'s
//! declarations are the binary wire format, `resolve` builds them, `proto` carries them;
//! `policy::orgdomain` is pure too; `resolve` knows nothing of sockets; only `resolve::upstream`
//! talks to DNS, and it never parses record text (`resolve::answer` hands it to `policy`);
//! `serve`'s `Service` turns socket frames and DNS front-end questions into `Resolver` calls
//! (DNS wire formats stay in `serve::dns`: `records`, `answer_cache`); `config` builds
//! `serve::daemon::DaemonConfig`, and `serve` never imports `config`.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod model;
pub mod policy;
pub mod proto;
pub mod resolve;
pub mod serve;
