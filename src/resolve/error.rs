//! Why a question got no answer: [`ResolveError`], its temporary/permanent split and its
//! stable labels (metrics and the wire protocol map from them).

use std::sync::Arc;

/// Why a question got no answer. Each is temporary (try again later: SPF/DMARC `temperror`)
/// or permanent (`permerror`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// Upstream did not answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// Upstream answered SERVFAIL.
    #[error("upstream answered SERVFAIL")]
    ServFail,
    /// Upstream answered REFUSED.
    #[error("upstream answered REFUSED")]
    Refused,
    /// The answer failed DNSSEC validation (RFC 4035 §5.5): never to be used, not even as
    /// "no records".
    #[error("the answer failed DNSSEC validation (bogus)")]
    DnssecBogus,
    /// Another response code.
    #[error("upstream answered {0}")]
    Rcode(Arc<str>),
    /// A network or protocol failure talking to upstream.
    #[error("upstream failure: {0}")]
    Network(Arc<str>),
    /// The organization's upstream budget is spent and nothing is cached.
    #[error("rate limited: the organization's upstream query budget is spent")]
    RateLimited,
    /// The name cannot be asked for.
    #[error("invalid name: {0}")]
    InvalidName(Arc<str>),
    /// The resolver could not be set up.
    #[error("configuration: {0}")]
    Config(Arc<str>),
    /// A bug: a background task failed.
    #[error("internal error: {0}")]
    Internal(Arc<str>),
}

impl ResolveError {
    /// Whether this is an upstream failure, remembered per name for the failure TTL
    /// (RFC 9520) so a failing name is not asked again at every question.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ResolveError::Timeout
                | ResolveError::ServFail
                | ResolveError::Refused
                | ResolveError::DnssecBogus
                | ResolveError::Rcode(_)
                | ResolveError::Network(_)
        )
    }

    /// Whether trying again later may succeed (`temperror` rather than `permerror`).
    pub fn is_temporary(&self) -> bool {
        !matches!(self, ResolveError::InvalidName(_) | ResolveError::Config(_))
    }

    /// A stable label for metrics and the wire protocol.
    pub fn label(&self) -> &'static str {
        match self {
            ResolveError::Timeout => "timeout",
            ResolveError::ServFail => "servfail",
            ResolveError::Refused => "refused",
            ResolveError::DnssecBogus => "dnssec_bogus",
            ResolveError::Rcode(_) => "rcode",
            ResolveError::Network(_) => "network",
            ResolveError::RateLimited => "rate_limited",
            ResolveError::InvalidName(_) => "invalid_name",
            ResolveError::Config(_) => "config",
            ResolveError::Internal(_) => "internal",
        }
    }
}
