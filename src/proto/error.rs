//! The one table of wire error codes: what each means, whether retrying later may succeed, and
//! whether the server closes the connection after sending it. [`super::WireError`] carries the
//! code string, the request metrics label their results with it, and the README lists every
//! code (a test checks).

/// A stable wire error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A name that is not a valid domain name.
    InvalidName,
    /// An `spf_check` IP address that does not parse.
    InvalidIp,
    /// Upstream queries for that name are over their rate.
    RateLimited,
    /// Upstream did not answer in time.
    Timeout,
    /// Upstream answered SERVFAIL.
    ServFail,
    /// Upstream answered REFUSED.
    Refused,
    /// The answer failed DNSSEC validation.
    DnssecBogus,
    /// Another rcode, a network error, a broken CNAME chain.
    Upstream,
    /// A well-formed request naming an operation this build does not have.
    UnknownOp,
    /// A JSON request that is not a request.
    BadJson,
    /// A frame over the size bound.
    FrameTooLarge,
    /// A binary frame that does not decode, or a connection closed inside a frame.
    BadFrame,
    /// A `hello` announcing another protocol major version.
    UnsupportedVersion,
    /// The peer's credentials are not in the allow-list.
    Forbidden,
    /// A bug or a response that could not be encoded.
    Internal,
}

/// One row of [`ERROR_CODES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// The code.
    pub code: ErrorCode,
    /// Its string on the wire and in metric labels.
    pub name: &'static str,
    /// Whether the same request may succeed later (a filter should tempfail, not reject).
    pub temporary: bool,
    /// Whether the server closes the connection after sending it.
    pub closes: bool,
    /// One line for people.
    pub description: &'static str,
}

const fn row(
    code: ErrorCode,
    name: &'static str,
    temporary: bool,
    closes: bool,
    description: &'static str,
) -> CodeInfo {
    CodeInfo {
        code,
        name,
        temporary,
        closes,
        description,
    }
}

/// Every wire error code, in [`ErrorCode`] order.
pub const ERROR_CODES: &[CodeInfo] = {
    use ErrorCode::*;
    &[
        row(
            InvalidName,
            "invalid_name",
            false,
            false,
            "not a valid domain name",
        ),
        row(InvalidIp, "invalid_ip", false, false, "not an IP address"),
        row(
            RateLimited,
            "rate_limited",
            true,
            false,
            "upstream queries over their rate",
        ),
        row(
            Timeout,
            "timeout",
            true,
            false,
            "upstream did not answer in time",
        ),
        row(
            ServFail,
            "servfail",
            true,
            false,
            "upstream answered SERVFAIL",
        ),
        row(Refused, "refused", true, false, "upstream answered REFUSED"),
        row(
            DnssecBogus,
            "dnssec_bogus",
            true,
            false,
            "the answer failed DNSSEC validation",
        ),
        row(
            Upstream,
            "upstream",
            true,
            false,
            "another rcode, a network error, a broken CNAME chain",
        ),
        row(
            UnknownOp,
            "unknown_op",
            false,
            false,
            "an operation this build does not have",
        ),
        row(
            BadJson,
            "bad_json",
            false,
            false,
            "a JSON line that is not a request",
        ),
        row(
            FrameTooLarge,
            "frame_too_large",
            false,
            true,
            "a frame over 64 KiB",
        ),
        row(
            BadFrame,
            "bad_frame",
            false,
            true,
            "an undecodable frame, or EOF inside one",
        ),
        row(
            UnsupportedVersion,
            "unsupported_version",
            false,
            true,
            "another protocol major",
        ),
        row(
            Forbidden,
            "forbidden",
            false,
            true,
            "peer credentials not in the allow-list",
        ),
        row(
            Internal,
            "internal",
            true,
            false,
            "a response that could not be made or encoded",
        ),
    ]
};

impl ErrorCode {
    /// Its row of [`ERROR_CODES`].
    pub const fn info(self) -> &'static CodeInfo {
        &ERROR_CODES[self as usize]
    }

    /// Its string on the wire.
    pub const fn as_str(self) -> &'static str {
        self.info().name
    }

    /// The code named `name`, if it is one.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ERROR_CODES.iter().find(|r| r.name == name).map(|r| r.code)
    }

    /// Whether the server closes the connection after sending it.
    pub const fn closes(self) -> bool {
        self.info().closes
    }

    /// Whether the same request may succeed later.
    pub const fn temporary(self) -> bool {
        self.info().temporary
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_names_are_unique() {
        for (i, r) in ERROR_CODES.iter().enumerate() {
            assert_eq!(r.code as usize, i, "{}", r.name);
            assert_eq!(ErrorCode::parse(r.name), Some(r.code));
            assert!(!r.description.is_empty());
        }
        assert_eq!(ErrorCode::parse("shutting_down"), None);
        assert_eq!(ErrorCode::parse("ok"), None);
    }

    #[test]
    fn readme_lists_every_error_code() {
        let readme = include_str!("../../README.md");
        let missing: Vec<&str> = ERROR_CODES
            .iter()
            .map(|r| r.name)
            .filter(|n| !readme.contains(&format!("`{n}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md's error-code list lacks {missing:?}"
        );
    }
}
