//! The outcome of an SPF check (RFC 7208) as the `spf_check` op carries it.

use serde::{Deserialize, Serialize};

use crate::policy::spf::Qualifier;

crate::policy::str_enum! {
    /// An SPF result (RFC 7208 §2.6, §8).
    pub enum SpfResult {
        /// The client is authorized.
        Pass => "pass",
        /// The client is not authorized.
        Fail => "fail",
        /// Probably not authorized.
        SoftFail => "softfail",
        /// No assertion.
        Neutral => "neutral",
        /// No SPF record, or no checkable domain.
        None => "none",
        /// A transient DNS error.
        TempError => "temperror",
        /// The record could not be interpreted.
        PermError => "permerror",
    }
}

impl From<Qualifier> for SpfResult {
    fn from(q: Qualifier) -> Self {
        match q {
            Qualifier::Pass => SpfResult::Pass,
            Qualifier::Fail => SpfResult::Fail,
            Qualifier::SoftFail => SpfResult::SoftFail,
            Qualifier::Neutral => SpfResult::Neutral,
        }
    }
}

/// The outcome of an SPF check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpfCheck {
    /// The verdict.
    pub result: SpfResult,
    /// The domain checked (the MAIL FROM domain, or the HELO name for a null sender).
    pub domain: String,
    /// `mailfrom` or `helo`.
    pub identity: String,
    /// The directive that decided (e.g. `-all`, `include:_spf.example.net`), `default` when
    /// none matched, or where a temperror/permerror arose.
    pub mechanism: Option<String>,
    /// The expanded `exp=` explanation, for a fail.
    pub explanation: Option<String>,
    /// Why the result is temperror or permerror.
    pub problem: Option<String>,
    /// DNS-querying terms used (≤ 10 unless permerror).
    pub dns_lookups: usize,
    /// Void lookups (NXDOMAIN or empty answers).
    pub void_lookups: usize,
    /// The `Received-SPF:` header field value (RFC 7208 §9.1), without the field name.
    pub received_spf: String,
}
