//! Postfix's SMTPD policy delegation protocol (Postfix's `SMTPD_POLICY_README`), pure: the
//! request framing and the action encoder, no I/O.
//!
//! A request is `name=value` lines, each ended by `\n` (a `\r\n` is accepted too), and the
//! request by an empty line; the answer is `action=…` and an empty line. One connection carries
//! several requests. The parser is incremental: [`split`] looks at the bytes read so far and
//! either finds the first whole request, says more bytes are needed, or gives a typed error
//! ([`PolicyError`]), after which the connection is closed. A request holds at most
//! [`MAX_ATTRIBUTES`] attributes and [`MAX_REQUEST`] bytes, both checked before the request is
//! complete, so a peer that never sends the empty line cannot make the buffer grow past them.
//! Unknown attributes are kept (newer Postfix versions add attributes), and the reader of a
//! request asks only for the names it knows ([`PolicyRequest::get`]).

/// At most this many attributes in one request.
pub const MAX_ATTRIBUTES: usize = 100;
/// At most this many bytes in one request, its lines and the ending empty line included.
pub const MAX_REQUEST: usize = 64 * 1024;

/// Why the bytes on a policy connection are not a request; the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// More than [`MAX_ATTRIBUTES`] attributes before the empty line.
    #[error("more than {MAX_ATTRIBUTES} attributes in one request")]
    TooManyAttributes,
    /// More than [`MAX_REQUEST`] bytes before the empty line.
    #[error("a request of more than {MAX_REQUEST} bytes")]
    TooLarge,
    /// A line without `=` (line numbers count from 1 within the request).
    #[error("line {line} of the request is not name=value")]
    NotAttribute {
        /// The line.
        line: usize,
    },
    /// A line whose name is empty (`=value`).
    #[error("line {line} of the request has an empty attribute name")]
    EmptyName {
        /// The line.
        line: usize,
    },
    /// A line that is not UTF-8.
    #[error("line {line} of the request is not UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// A control character (other than the line end) in a line.
    #[error("line {line} of the request holds a control character")]
    ControlCharacter {
        /// The line.
        line: usize,
    },
}

/// One request: its attributes in the order received (a repeated name keeps its last value in
/// [`PolicyRequest::get`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRequest {
    attrs: Vec<(String, String)>,
}

impl PolicyRequest {
    /// The value of attribute `name` (the last one if repeated); `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, or `""` when absent.
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every attribute, in order.
    pub fn attributes(&self) -> &[(String, String)] {
        &self.attrs
    }

    /// Builds a request from attribute pairs (for tests and callers that make one).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        PolicyRequest {
            attrs: pairs
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

/// The first whole request in `buf`, and how many bytes it took; `Ok(None)` when more bytes
/// are needed (the limits are checked on what is there already).
pub fn split(buf: &[u8]) -> Result<Option<(PolicyRequest, usize)>, PolicyError> {
    let mut attrs = Vec::new();
    let mut at = 0;
    let mut line_no = 0;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            // An unfinished line: the request so far (this line included) is over the bound
            // already, or may still fit.
            if buf.len() > MAX_REQUEST {
                return Err(PolicyError::TooLarge);
            }
            return Ok(None);
        };
        let end = at + nl + 1;
        if end > MAX_REQUEST {
            return Err(PolicyError::TooLarge);
        }
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line_no += 1;
        at = end;
        if line.is_empty() {
            return Ok(Some((PolicyRequest { attrs }, at)));
        }
        if attrs.len() == MAX_ATTRIBUTES {
            return Err(PolicyError::TooManyAttributes);
        }
        attrs.push(attribute(line, line_no)?);
    }
}

/// The bytes a connection has read and not yet taken as requests: [`split`] over a buffer
/// that keeps what is left of a request between reads.
#[derive(Debug, Default)]
pub struct RequestBuf {
    buf: Vec<u8>,
}

impl RequestBuf {
    /// Appends bytes read.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole request, taken out of the buffer; `Ok(None)` when more bytes are needed.
    pub fn next_request(&mut self) -> Result<Option<PolicyRequest>, PolicyError> {
        let Some((req, used)) = split(&self.buf)? else {
            return Ok(None);
        };
        self.buf.drain(..used);
        Ok(Some(req))
    }

    /// Feeds `bytes` and takes every whole request now there, then the error that stopped
    /// the parsing, if any (nothing after it is a request).
    pub fn read(&mut self, bytes: &[u8]) -> (Vec<PolicyRequest>, Option<PolicyError>) {
        self.feed(bytes);
        let mut out = Vec::new();
        loop {
            match self.next_request() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }
}

/// Every request of `chunks` read in order on one connection, and the error that stopped the
/// parsing, if any (how the fuzz target and the tests check that any cut of the bytes gives
/// the same requests).
pub fn requests_of(chunks: &[&[u8]]) -> (Vec<PolicyRequest>, Option<PolicyError>) {
    let (mut rb, mut out) = (RequestBuf::default(), Vec::new());
    for chunk in chunks {
        let (got, err) = rb.read(chunk);
        out.extend(got);
        if err.is_some() {
            return (out, err);
        }
    }
    (out, None)
}

fn attribute(line: &[u8], line_no: usize) -> Result<(String, String), PolicyError> {
    let text = std::str::from_utf8(line).map_err(|_| PolicyError::NotUtf8 { line: line_no })?;
    if text.chars().any(char::is_control) {
        return Err(PolicyError::ControlCharacter { line: line_no });
    }
    let (name, value) = text
        .split_once('=')
        .ok_or(PolicyError::NotAttribute { line: line_no })?;
    if name.is_empty() {
        return Err(PolicyError::EmptyName { line: line_no });
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `550 5.7.23 <text>` (RFC 7372: SPF validation failed).
    Reject(String),
    /// `550 5.7.24 <text>` (RFC 7372: SPF validation error; `permerror = "reject"`).
    RejectError(String),
    /// `451 4.7.24 <text>` (RFC 7372: SPF validation error, temporary).
    Defer(String),
    /// `PREPEND Received-SPF: <value>`.
    PrependReceivedSpf(String),
    /// `DUNNO`: no decision here, Postfix goes on with its restrictions.
    Dunno,
}

impl Action {
    /// The `action` label of `mailpolicyd_postfix_policy_requests_total`: `reject` (both
    /// 550s), `defer`, `prepend` or `dunno`.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Reject(_) | Action::RejectError(_) => "reject",
            Action::Defer(_) => "defer",
            Action::PrependReceivedSpf(_) => "prepend",
            Action::Dunno => "dunno",
        }
    }

    /// The `action=` value, without the line end: a free text becomes printable ASCII on one
    /// line (any other character `?`), at most [`MAX_TEXT`] characters, so nothing from DNS
    /// can end the answer or add a line.
    pub fn value(&self) -> String {
        match self {
            Action::Reject(t) => format!("550 5.7.23 {}", one_line(t)),
            Action::RejectError(t) => format!("550 5.7.24 {}", one_line(t)),
            Action::Defer(t) => format!("451 4.7.24 {}", one_line(t)),
            Action::PrependReceivedSpf(v) => format!("PREPEND Received-SPF: {}", one_line(v)),
            Action::Dunno => "DUNNO".to_owned(),
        }
    }

    /// The whole answer: `action=<value>\n\n`.
    pub fn encode(&self) -> Vec<u8> {
        format!("action={}\n\n", self.value()).into_bytes()
    }
}

/// The longest free text of an action (a reply line stays under SMTP's 512 octets).
pub const MAX_TEXT: usize = 400;

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(MAX_TEXT)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.10\nclient_name=another.domain.tld\nhelo_name=some.domain.tld\nsender=foo@bar.tld\nrecipient=bar@foo.tld\ninstance=123.456.7\nsasl_username=\n\n";

    #[test]
    fn a_whole_request_and_what_it_took() {
        let (req, used) = split(SAMPLE.as_bytes()).unwrap().unwrap();
        assert_eq!(used, SAMPLE.len());
        assert_eq!(req.get("client_address"), Some("192.0.2.10"));
        assert_eq!(req.get("sasl_username"), Some(""));
        assert_eq!(req.get("missing"), None);
        assert_eq!(req.value("missing"), "");
        assert_eq!(req.attributes().len(), 10);
    }

    #[test]
    fn crlf_lines_are_the_same_request() {
        let crlf = SAMPLE.replace('\n', "\r\n");
        let (a, used) = split(crlf.as_bytes()).unwrap().unwrap();
        assert_eq!(used, crlf.len());
        assert_eq!(a, split(SAMPLE.as_bytes()).unwrap().unwrap().0);
    }

    #[test]
    fn every_prefix_needs_more_and_two_requests_come_one_at_a_time() {
        for cut in 0..SAMPLE.len() {
            assert_eq!(split(&SAMPLE.as_bytes()[..cut]), Ok(None), "cut at {cut}");
        }
        let two = format!("{SAMPLE}{}", SAMPLE.replace("RCPT", "MAIL"));
        let (first, used) = split(two.as_bytes()).unwrap().unwrap();
        assert_eq!(first.get("protocol_state"), Some("RCPT"));
        let (second, rest) = split(&two.as_bytes()[used..]).unwrap().unwrap();
        assert_eq!(second.get("protocol_state"), Some("MAIL"));
        assert_eq!(used + rest, two.len());
    }

    #[test]
    fn unknown_attributes_are_kept_and_values_may_hold_equals() {
        let (req, _) = split(b"new_attr_2030=x=y\nrequest=smtpd_access_policy\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(req.get("new_attr_2030"), Some("x=y"));
        assert_eq!(req.get("request"), Some("smtpd_access_policy"));
    }

    #[test]
    fn an_empty_request_is_a_request() {
        assert_eq!(split(b"\n").unwrap(), Some((PolicyRequest::default(), 1)));
    }

    #[test]
    fn a_repeated_name_reads_its_last_value() {
        let (req, _) = split(b"a=1\na=2\n\n").unwrap().unwrap();
        assert_eq!(req.get("a"), Some("2"));
    }

    #[test]
    fn at_most_100_attributes() {
        let mut ok = String::new();
        for i in 0..MAX_ATTRIBUTES {
            ok.push_str(&format!("a{i}=v\n"));
        }
        assert_eq!(
            split(format!("{ok}\n").as_bytes())
                .unwrap()
                .unwrap()
                .0
                .attributes()
                .len(),
            100
        );
        // The 101st is refused as soon as its line is there, before any empty line.
        assert_eq!(
            split(format!("{ok}a100=v\n").as_bytes()),
            Err(PolicyError::TooManyAttributes)
        );
        assert_eq!(split(format!("{ok}a100=v").as_bytes()), Ok(None));
    }

    #[test]
    fn at_most_64_kib() {
        // Exactly 64 KiB with the empty line: accepted.
        let fill = MAX_REQUEST - "v=\n\n".len();
        let exact = format!("v={}\n\n", "x".repeat(fill));
        assert_eq!(exact.len(), MAX_REQUEST);
        assert!(split(exact.as_bytes()).unwrap().is_some());
        // One byte more: refused, and so is an unfinished line past the bound.
        let over = format!("v={}\n\n", "x".repeat(fill + 1));
        assert_eq!(split(over.as_bytes()), Err(PolicyError::TooLarge));
        let endless = format!("v={}", "x".repeat(MAX_REQUEST));
        assert_eq!(split(endless.as_bytes()), Err(PolicyError::TooLarge));
        // Under the bound and unfinished: more is needed.
        assert_eq!(split(&endless.as_bytes()[..MAX_REQUEST]), Ok(None));
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        assert_eq!(
            split(b"request=smtpd_access_policy\ngarbage\n\n"),
            Err(PolicyError::NotAttribute { line: 2 })
        );
        assert_eq!(split(b"=x\n\n"), Err(PolicyError::EmptyName { line: 1 }));
        assert_eq!(
            split(b"a=\xff\xfe\n\n"),
            Err(PolicyError::NotUtf8 { line: 1 })
        );
        assert_eq!(
            split(b"a=b\x00c\n\n"),
            Err(PolicyError::ControlCharacter { line: 1 })
        );
        assert_eq!(
            split(b"a=b\rc\n\n"),
            Err(PolicyError::ControlCharacter { line: 1 })
        );
        // The binary socket protocol's length prefix is garbage here too.
        assert!(split(b"\x00\x00\x00\x10{\"id\":1}\n\n").is_err());
    }

    #[test]
    fn actions_are_one_line_each() {
        assert_eq!(Action::Dunno.encode(), b"action=DUNNO\n\n");
        assert_eq!(
            Action::Reject("SPF fail: no".into()).encode(),
            b"action=550 5.7.23 SPF fail: no\n\n"
        );
        assert_eq!(
            Action::RejectError("SPF permerror".into()).value(),
            "550 5.7.24 SPF permerror"
        );
        assert_eq!(
            Action::Defer("SPF temperror".into()).value(),
            "451 4.7.24 SPF temperror"
        );
        assert_eq!(
            Action::PrependReceivedSpf("pass (x)".into()).value(),
            "PREPEND Received-SPF: pass (x)"
        );
        // Text from DNS (an exp= explanation) cannot add a line or an attribute.
        let v = Action::Reject("a\nb\r\naction=OK é".into()).value();
        assert_eq!(v, "550 5.7.23 a?b??action=OK ?");
        let long = Action::Reject("x".repeat(1000)).value();
        assert_eq!(long.len(), "550 5.7.23 ".len() + MAX_TEXT);
        for (a, l) in [
            (Action::Reject(String::new()), "reject"),
            (Action::RejectError(String::new()), "reject"),
            (Action::Defer(String::new()), "defer"),
            (Action::PrependReceivedSpf(String::new()), "prepend"),
            (Action::Dunno, "dunno"),
        ] {
            assert_eq!(a.label(), l);
        }
    }

    fn feed(parts: &[&[u8]]) -> (Vec<PolicyRequest>, bool) {
        let (reqs, err) = requests_of(parts);
        (reqs, err.is_some())
    }

    const PIECES: &[&str] = &[
        "request=smtpd_access_policy\n",
        "protocol_state=RCPT\n",
        "sender=a@b.test\n",
        "a=b=c\n",
        "\n",
        "\r\n",
        "=",
        "x",
        "\u{0}",
        "\r",
        "é",
        "garbage\n",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, failure_persistence: None, ..Default::default() })]
        /// Cutting the bytes anywhere gives the same requests as reading them whole (the
        /// connection appends each read and splits again); no request is over its bounds.
        #[test]
        fn any_cut_gives_the_same_requests(
            picks in proptest::collection::vec(0..PIECES.len() + 1, 0..300),
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..16),
            cut in 0usize..4096,
        ) {
            let mut bytes = Vec::new();
            for p in picks {
                match PIECES.get(p) {
                    Some(t) => bytes.extend_from_slice(t.as_bytes()),
                    None => bytes.extend_from_slice(&noise),
                }
            }
            let cut = cut.min(bytes.len());
            let whole = feed(&[&bytes]);
            proptest::prop_assert_eq!(&whole, &feed(&[&bytes[..cut], &bytes[cut..]]));
            for r in &whole.0 {
                proptest::prop_assert!(r.attributes().len() <= MAX_ATTRIBUTES);
            }
        }
    }
}
