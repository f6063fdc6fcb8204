//! The Unix-socket protocol, shared by the server, the clients, the CLI and the load test.
//!
//! Two framings of the same messages:
//! - **binary** (the default): each frame is a 4-byte big-endian length, then the postcard
//!   encoding of a [`Request`] or [`Response`];
//! - **JSON**: a connection whose first byte is `{` speaks newline-delimited JSON of the same
//!   types (for Python, Perl, Lua and C filters).
//!
//! Requests carry an `id`; responses echo it and may come back in any order, so a client can
//! keep many requests in flight on one connection. New operations are only ever appended to
//! [`Op`] (postcard numbers variants by position), so old clients keep working.
//!
//! [`frame`] is the one codec of both framings; [`error`] the one table of wire error codes.

pub mod error;
pub mod frame;
pub mod postfix_policy;

use serde::{Deserialize, Serialize};

pub use crate::model::answer::PolicyAnswer;
use crate::model::answer::{Answer, Source};
/// The answer to `dmarc`: the DMARC policy that applies, and how it was found. The resolver's
/// discovery result itself, sent as it is (no field-by-field copy).
pub use crate::model::dmarc::DmarcDiscovery as DmarcAnswer;
use crate::model::dmarc::{DmarcInput, DmarcVerdict};
use crate::model::name::{AuthorDomain, DomainName, NameError};
use crate::model::spf::SpfCheck;
use crate::model::stats::StatsSnapshot;
use crate::policy::atps::AtpsHash;

/// Protocol major version: a client announcing another major is refused, except
/// [`JSON_COMPAT_MAJOR`] on a JSON-lines connection. 2: a policy answer carries `raw` (the
/// selected record's text) after its fingerprint, which moves the binary encoding.
pub const PROTOCOL_MAJOR: u32 = 2;
/// The older major still accepted in `hello` on a JSON-lines connection: to a JSON client
/// version 2 only added a field (`raw`), which a 1.x client ignores. A binary client must say 2
/// (postcard is positional: a 1.x binary client would misread every policy answer).
pub const JSON_COMPAT_MAJOR: u32 = 1;
/// Protocol minor version: additions that old clients can ignore.
pub const PROTOCOL_MINOR: u32 = 0;
pub use error::{CodeInfo, ERROR_CODES, ErrorCode};
pub use frame::MAX_FRAME;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client; echoed in the response.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// The operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Announces the client's protocol version, `"MAJOR.MINOR"`.
    Hello {
        /// e.g. `"2.0"`.
        version: String,
    },
    /// Liveness round trip.
    Ping,
    /// The resolver's counters.
    Stats,
    /// The DMARC policy that applies to mail from `domain` (discovery included).
    Dmarc {
        /// The RFC 5322.From domain.
        domain: String,
    },
    /// The SPF record of `domain`.
    Spf {
        /// The domain.
        domain: String,
    },
    /// The DKIM key at `<selector>._domainkey.<domain>`.
    DkimKey {
        /// The `s=` selector.
        selector: String,
        /// The `d=` domain.
        domain: String,
    },
    /// The ATPS record authorizing `signer` for `author`.
    Atps {
        /// The signing domain (`d=`).
        signer: String,
        /// The author domain.
        author: String,
        /// The signature's `atpsh=`.
        hash: AtpsHash,
    },
    /// TLSA records for `_<port>._tcp.<host>` (port 25 when absent).
    Tlsa {
        /// The MX host.
        host: String,
        /// The port.
        port: Option<u16>,
    },
    /// SPF `check_host()` for a connection (RFC 7208).
    SpfCheck {
        /// The client IP address.
        ip: String,
        /// The envelope sender (empty for the null sender: the HELO name is checked).
        mail_from: String,
        /// The HELO/EHLO name.
        helo: String,
    },
    /// The DMARC verdict for a message.
    DmarcEvaluate(DmarcInput),
}

/// The number of [`Op`] variants this build knows (binary frames with a larger variant index
/// are answered `unknown_op` without closing the connection).
pub const OP_COUNT: u32 = 10;

impl Op {
    /// A stable label (metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::Ping => "ping",
            Op::Stats => "stats",
            Op::Dmarc { .. } => "dmarc",
            Op::Spf { .. } => "spf",
            Op::DkimKey { .. } => "dkim_key",
            Op::Atps { .. } => "atps",
            Op::Tlsa { .. } => "tlsa",
            Op::SpfCheck { .. } => "spf_check",
            Op::DmarcEvaluate(_) => "dmarc_evaluate",
        }
    }
}

/// A response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id (0 when the request could not be read far enough to know it).
    pub id: u64,
    /// The outcome.
    pub result: Outcome,
}

/// Success or a stable error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The answer.
    Ok(Reply),
    /// Why there is none.
    Error(WireError),
}

/// The successful replies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// To `Hello`: the server's protocol and software versions.
    Hello {
        /// `"MAJOR.MINOR"`.
        version: String,
        /// The server software, e.g. `mailpolicyd 0.1.0`.
        server: String,
    },
    /// To `Ping`.
    Pong,
    /// To `Stats`.
    Stats(Box<StatsSnapshot>),
    /// To `Spf`, `DkimKey`, `Atps`, `Tlsa`.
    Policy(PolicyAnswer),
    /// To `Dmarc`.
    Dmarc(Box<DmarcAnswer>),
    /// To `SpfCheck`.
    SpfCheck(Box<SpfCheck>),
    /// To `DmarcEvaluate`.
    DmarcVerdict(Box<DmarcVerdict>),
}

/// A stable error code plus a human message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Stable: one of [`ERROR_CODES`].
    pub code: String,
    /// For people.
    pub message: String,
}

impl WireError {
    /// A new error; `code` is one of [`ERROR_CODES`] (checked in debug builds).
    pub fn new(code: &str, message: impl Into<String>) -> WireError {
        debug_assert!(
            ErrorCode::parse(code).is_some(),
            "{code:?} is not in proto::ERROR_CODES"
        );
        WireError {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// A new error with a code of the table.
    pub fn of(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code's row of the table, when it is one this build knows.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for WireError {}

/// Encodes a value as one binary frame (length prefix + postcard) appended to `out` (left as it
/// was on an error).
pub fn encode_frame<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
    frame::encode_binary(out, |o| postcard::to_extend(value, Append(o)).map(drop))
        .map_err(|e| e.unwrap_or(postcard::Error::SerializeBufferFull))
}

/// postcard's writer over a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Appends the binary frame of a policy reply, `Response { id, result: Ok(Policy(PolicyAnswer {
/// source, ttl, answer })) }`, with the answer's kept encoding spliced in ([`Answer::encoded`];
/// a miss's answer, whose encoding is not kept, is serialized in place, the same bytes):
/// postcard is concatenative (a struct is its fields in order, an enum its variant index then
/// its payload), so the bytes are exactly those of [`encode_frame`] on the same response, without
/// walking the parsed record (tested against it in `tests/proto_splice.rs`). No variant index is
/// written here: the bytes between the id and the source are taken from postcard itself
/// ([`policy_reply_prefix`]).
pub fn encode_policy_frame(id: u64, source: Source, ttl: u32, answer: &Answer, out: &mut Vec<u8>) {
    let _ = frame::encode_binary(out, |out| {
        postcard::to_extend(&id, Append(&mut *out))?;
        out.extend_from_slice(policy_reply_prefix());
        postcard::to_extend(&(source, ttl), Append(&mut *out))?;
        match (answer.encoded_if_kept(), source) {
            (Some(kept), _) => out.extend_from_slice(kept),
            // The first answer of a fetched entry: serialized here, nothing kept (an entry
            // asked once holds no second copy of its record).
            (None, Source::Miss) => postcard::to_extend(answer, Append(&mut *out)).map(drop)?,
            (None, _) => out.extend_from_slice(answer.encoded()),
        }
        Ok::<(), postcard::Error>(())
    });
}

/// The encoding of `Outcome::Ok(Reply::Policy(..))` up to the `PolicyAnswer`'s fields: the two
/// variant indices, as postcard writes them for these enums (so reordering a variant moves them
/// too). Computed once, by encoding a tiny policy reply and cutting off its fields.
fn policy_reply_prefix() -> &'static [u8] {
    static PREFIX: std::sync::OnceLock<Box<[u8]>> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let answer = std::sync::Arc::new(Answer::nxdomain(crate::model::Kind::Spf, "", 0));
        let fields = (Source::Hit, 0u32);
        let mut tail = postcard::to_allocvec(&fields).unwrap_or_default();
        tail.extend_from_slice(answer.encoded());
        let reply = Outcome::Ok(Reply::Policy(PolicyAnswer {
            source: fields.0,
            ttl: fields.1,
            answer,
        }));
        let whole = postcard::to_allocvec(&reply).unwrap_or_default();
        debug_assert!(whole.ends_with(&tail), "postcard is not concatenative");
        whole[..whole.len().saturating_sub(tail.len())].into()
    })
}

/// Encodes a value as one JSON line appended to `out`.
pub fn encode_json_line<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)?;
    out.push(b'\n');
    Ok(())
}

/// What the first bytes of a binary frame payload say, before decoding the op.
pub enum Peeked {
    /// A request this build can decode.
    Request(Request),
    /// The id decoded but the op is a variant this build does not know.
    UnknownOp(u64),
    /// Not decodable at all.
    Garbage(String),
}

/// Decodes a binary request payload, telling an unknown operation (answerable) from garbage
/// (which closes the connection).
pub fn decode_request(payload: &[u8]) -> Peeked {
    match postcard::from_bytes::<Request>(payload) {
        Ok(r) => Peeked::Request(r),
        Err(e) => match postcard::take_from_bytes::<u64>(payload)
            .and_then(|(id, rest)| postcard::take_from_bytes::<u32>(rest).map(|(v, _)| (id, v)))
        {
            Ok((id, variant)) if variant >= OP_COUNT => Peeked::UnknownOp(id),
            _ => Peeked::Garbage(e.to_string()),
        },
    }
}

/// The JSON names of the operations this build knows (the `op` key or tag).
pub const OP_NAMES: [&str; OP_COUNT as usize] = [
    "hello",
    "ping",
    "stats",
    "dmarc",
    "spf",
    "dkim_key",
    "atps",
    "tlsa",
    "spf_check",
    "dmarc_evaluate",
];

/// What a JSON request line says.
pub enum JsonPeeked {
    /// A request this build can decode.
    Request(Request),
    /// A well-formed request (one `id`, an unsigned integer; one `op`) naming an operation
    /// this build does not know: the id and why.
    UnknownOp(u64, String),
    /// Anything else (broken JSON, a missing, negative, fractional or repeated `id`, a known
    /// operation with bad arguments): the id when it could be read (else 0) and why.
    BadJson(u64, String),
}

/// The envelope of a JSON request, decoded strictly (a repeated key is an error) so that only a
/// well-formed request with an unfamiliar `op` is called an unknown operation.
#[derive(Deserialize)]
struct JsonEnvelope {
    id: u64,
    op: serde_json::Value,
}

/// Decodes one JSON request line (without its newline).
pub fn decode_json_request(line: &[u8]) -> JsonPeeked {
    let e = match serde_json::from_slice::<Request>(line) {
        Ok(r) => return JsonPeeked::Request(r),
        Err(e) => e,
    };
    let env = match serde_json::from_slice::<JsonEnvelope>(line) {
        Ok(env) => env,
        Err(e2) => {
            let what = if e2.is_syntax() || e2.is_eof() {
                "not JSON"
            } else {
                "not a request"
            };
            // Echo the id when there is exactly one, a valid one.
            let id = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .filter(|_| !e2.to_string().contains("duplicate field"))
                .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            return JsonPeeked::BadJson(id, format!("{what}: {e2}"));
        }
    };
    let name = match &env.op {
        serde_json::Value::String(s) => Some(s.as_str()),
        serde_json::Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    };
    match name {
        Some(n) if !OP_NAMES.contains(&n) => JsonPeeked::UnknownOp(env.id, e.to_string()),
        _ => JsonPeeked::BadJson(env.id, format!("not a request: {e}")),
    }
}

/// Whether a client announcing `major` in `hello` is served: [`PROTOCOL_MAJOR`] on either
/// framing, and [`JSON_COMPAT_MAJOR`] on JSON lines only.
pub fn major_accepted(major: u32, framing: frame::Framing) -> bool {
    major == PROTOCOL_MAJOR || (major == JSON_COMPAT_MAJOR && framing == frame::Framing::Json)
}

/// Parses `"MAJOR.MINOR"`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// A domain name from a client, validated once ([`DomainName::host`]: IDNA (UTS #46) to
/// A-labels, lower case, no trailing dot, labels 1..=63 octets, the name at most 253; `_` kept
/// for `_dmarc`, `_domainkey`); an `invalid_name` error otherwise.
pub fn normalize_domain(input: &str) -> Result<DomainName, WireError> {
    DomainName::host(input).map_err(|e| invalid_name(input, e))
}

/// [`normalize_domain`] for a name the caller owns: one already normalized (the usual case: a
/// filter sends what it read from DNS or a header, lower-cased) is kept without a copy.
pub fn normalize_domain_owned(input: String) -> Result<DomainName, WireError> {
    DomainName::host_owned(input).map_err(|(input, e)| invalid_name(&input, e))
}

/// The author (From) domain of the `dmarc` and `dmarc_evaluate` ops ([`AuthorDomain::parse`]):
/// a name beyond DNS's lengths that is otherwise a plausible domain is accepted (it cannot
/// exist, so its organization's `np` applies); garbage is still `invalid_name`.
pub fn normalize_author_domain(input: &str) -> Result<AuthorDomain, WireError> {
    AuthorDomain::parse(input).map_err(|e| invalid_name(input, e))
}

fn invalid_name(input: &str, e: NameError) -> WireError {
    WireError::of(ErrorCode::InvalidName, format!("{input:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request {
            id: 7,
            op: Op::DkimKey {
                selector: "s1".into(),
                domain: "example.com".into(),
            },
        };
        let mut buf = Vec::new();
        encode_frame(&req, &mut buf).unwrap();
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        match decode_request(&buf[4..]) {
            Peeked::Request(r) => assert_eq!(r, req),
            _ => panic!(),
        }
        let mut line = Vec::new();
        encode_json_line(&req, &mut line).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line[0], b'{');
        assert_eq!(serde_json::from_slice::<Request>(&line).unwrap(), req);
    }

    #[test]
    fn unknown_op_is_told_from_garbage() {
        // id 5, variant index 200: a newer client's operation.
        let payload = [5u8, 200, 1];
        assert!(matches!(decode_request(&payload), Peeked::UnknownOp(5)));
        assert!(matches!(decode_request(&[0xff; 12]), Peeked::Garbage(_)));
        assert!(matches!(decode_request(&[]), Peeked::Garbage(_)));
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalize_domain("Example.COM.").unwrap().as_str(),
            "example.com"
        );
        // The owned form agrees on every name, taking the no-copy path for normalized ones.
        for name in [
            "example.com",
            "Example.COM.",
            "_dmarc.example.com",
            "bücher.example",
            "a..b",
            "",
            ".",
            "exa mple.com",
            "x.",
        ] {
            assert_eq!(
                normalize_domain_owned(name.to_owned()),
                normalize_domain(name),
                "{name:?}"
            );
        }
        assert_eq!(
            normalize_domain("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("_dmarc.example.com").unwrap().as_str(),
            "_dmarc.example.com"
        );
        for bad in [
            "",
            "a..b",
            &format!("{}.com", "a".repeat(64)),
            &"a.".repeat(150),
            "exa mple.com",
        ] {
            assert_eq!(
                normalize_domain(bad).unwrap_err().code,
                "invalid_name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn author_domains_beyond_dns_lengths_are_accepted_garbage_is_not() {
        let long = format!("{}Example.COM.", "a.".repeat(150));
        assert_eq!(
            normalize_author_domain(&long).unwrap().as_str(),
            format!("{}example.com", "a.".repeat(150))
        );
        let label = format!("{}.example.com", "b".repeat(64));
        assert_eq!(normalize_author_domain(&label).unwrap().as_str(), label);
        let idn = format!("{}.bücher.example", "c".repeat(250));
        assert!(
            normalize_author_domain(&idn)
                .unwrap()
                .as_str()
                .ends_with(".xn--bcher-kva.example")
        );
        assert_eq!(
            normalize_author_domain("Example.COM").unwrap().as_str(),
            "example.com"
        );
        for bad in [
            String::new(),
            ".".to_owned(),
            "a..b".to_owned(),
            format!("{}..example.com", "a".repeat(300)),
            format!("exa mple{}.com", "a".repeat(300)),
            format!("ctl\u{7}{}.com", "a".repeat(300)),
        ] {
            assert_eq!(
                normalize_author_domain(&bad).unwrap_err().code,
                "invalid_name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn majors_accepted_by_framing() {
        use frame::Framing::{Binary, Json};
        assert!(major_accepted(2, Binary) && major_accepted(2, Json));
        assert!(major_accepted(1, Json));
        assert!(!major_accepted(1, Binary));
        assert!(!major_accepted(3, Json) && !major_accepted(0, Binary));
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1.0"), Some((1, 0)));
        assert_eq!(parse_version("2"), Some((2, 0)));
        assert_eq!(parse_version("x"), None);
    }
}
