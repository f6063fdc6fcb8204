//! The `Received-SPF:` header field value (RFC 7208 §9.1) over RFC 5322: a comment of ctext and
//! `key=value` pairs whose values are dot-atoms or quoted-strings, so nothing from the input can
//! end the comment or add a field.

use std::net::IpAddr;

use super::SpfResult;

/// RFC 7208 §9.1: `result (comment) key=value; ...`.
#[allow(clippy::too_many_arguments)]
pub(super) fn received_spf(
    result: SpfResult,
    domain: &str,
    ip: IpAddr,
    sender: &str,
    helo: &str,
    identity: &str,
    mechanism: Option<&str>,
    problem: Option<&str>,
) -> String {
    let comment = match result {
        SpfResult::Pass => format!("domain of {domain} designates {ip} as permitted sender"),
        SpfResult::Fail => {
            format!("domain of {domain} does not designate {ip} as permitted sender")
        }
        SpfResult::SoftFail => {
            format!("domain of transitioning {domain} does not designate {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by domain of {domain}"),
        SpfResult::None => format!("domain of {domain} does not designate permitted sender hosts"),
        SpfResult::TempError | SpfResult::PermError => {
            problem.unwrap_or("error in processing").to_owned()
        }
    };
    // RFC 7208 §9.1 over RFC 5322: the comment is ctext only (no `(`, `)`, `\`), every value a
    // dot-atom or a quoted-string; nothing from the input can end the comment or add a field.
    let mut v = format!("{result} (mailpolicyd: {})", comment_text(&comment));
    let mut sep = " ";
    let mut pair = |key: &str, value: &str| {
        v.push_str(sep);
        sep = "; ";
        v.push_str(key);
        v.push('=');
        push_value(&mut v, value);
    };
    pair("client-ip", &ip.to_string());
    pair("envelope-from", sender);
    pair("helo", helo);
    pair("identity", identity);
    if let Some(m) = mechanism {
        pair("mechanism", m);
    }
    if let Some(p) = problem {
        pair("problem", p);
    }
    v
}

/// A byte a header field body can carry as itself: printable ASCII or space (RFC 5322 VCHAR / SP).
fn header_safe(c: char) -> bool {
    c == ' ' || c.is_ascii_graphic()
}

/// The comment's text: a character that could end or nest the comment (`(`, `)`, `\`), a control
/// character or a non-ASCII one is written `?`.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if header_safe(c) && !matches!(c, '(' | ')' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// RFC 5322 atext.
fn atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// RFC 5322 §3.2.3 dot-atom-text: atoms of atext joined by single dots.
fn dot_atom(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|a| !a.is_empty() && a.chars().all(atext))
}

/// A `key=value` value: as itself if a dot-atom, else a quoted-string (`"` and `\` as quoted
/// pairs; a control or non-ASCII character, which no header value may carry, as `?`).
fn push_value(out: &mut String, value: &str) {
    if dot_atom(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if header_safe(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}
