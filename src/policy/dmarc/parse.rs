//! The DMARC record grammar: the tag table and [`parse`].

use std::borrow::Cow;
use std::fmt;

use super::uri::parse_uri_list;
use super::{
    Alignment, Defaulted, Disposition, DmarcError, DmarcRecord, FailureOptions, Psd, TestMode,
    Version, code,
};
use crate::policy::scan::Classes;
use crate::policy::tag;
use crate::policy::{Diagnostics, ParseResult, Parsed, Rejected, is_wsp};

/// Every tag a DMARC record may carry, in canonical output order.
pub(super) const TAGS: [&str; 17] = [
    "p", "sp", "np", "adkim", "aspf", "pct", "rua", "ruf", "fo", "rf", "ri", "psd", "t", "fp",
    "frua", "fruf", "v",
];

pub(super) fn tag_bit(name: &str) -> Option<u32> {
    tag_index(name).map(|i| 1 << i)
}

/// Indexes into [`TAGS`], so the parser dispatches on a number instead of comparing strings.
mod ix {
    pub const P: usize = 0;
    pub const SP: usize = 1;
    pub const NP: usize = 2;
    pub const ADKIM: usize = 3;
    pub const ASPF: usize = 4;
    pub const PCT: usize = 5;
    pub const RUA: usize = 6;
    pub const RUF: usize = 7;
    pub const FO: usize = 8;
    pub const RF: usize = 9;
    pub const RI: usize = 10;
    pub const PSD: usize = 11;
    pub const T: usize = 12;
    pub const FP: usize = 13;
    pub const FRUA: usize = 14;
    pub const FRUF: usize = 15;
    pub const V: usize = 16;
}

/// The index in [`TAGS`] of a tag name, ignoring ASCII case.
fn tag_index(name: &str) -> Option<usize> {
    tag_index_of_key(tag::key(name.as_bytes())?)
}

/// The index in [`TAGS`] of a packed tag name ([`tag::key`]): a match on constants, which
/// compiles to a few word comparisons, since this runs once per tag of every record parsed.
fn tag_index_of_key(key: u64) -> Option<usize> {
    const P: u64 = tag::known(TAGS[ix::P]);
    const SP: u64 = tag::known(TAGS[ix::SP]);
    const NP: u64 = tag::known(TAGS[ix::NP]);
    const ADKIM: u64 = tag::known(TAGS[ix::ADKIM]);
    const ASPF: u64 = tag::known(TAGS[ix::ASPF]);
    const PCT: u64 = tag::known(TAGS[ix::PCT]);
    const RUA: u64 = tag::known(TAGS[ix::RUA]);
    const RUF: u64 = tag::known(TAGS[ix::RUF]);
    const FO: u64 = tag::known(TAGS[ix::FO]);
    const RF: u64 = tag::known(TAGS[ix::RF]);
    const RI: u64 = tag::known(TAGS[ix::RI]);
    const PSD: u64 = tag::known(TAGS[ix::PSD]);
    const T: u64 = tag::known(TAGS[ix::T]);
    const FP: u64 = tag::known(TAGS[ix::FP]);
    const FRUA: u64 = tag::known(TAGS[ix::FRUA]);
    const FRUF: u64 = tag::known(TAGS[ix::FRUF]);
    const V: u64 = tag::known(TAGS[ix::V]);
    Some(match key {
        P => ix::P,
        SP => ix::SP,
        NP => ix::NP,
        ADKIM => ix::ADKIM,
        ASPF => ix::ASPF,
        PCT => ix::PCT,
        RUA => ix::RUA,
        RUF => ix::RUF,
        FO => ix::FO,
        RF => ix::RF,
        RI => ix::RI,
        PSD => ix::PSD,
        T => ix::T,
        FP => ix::FP,
        FRUA => ix::FRUA,
        FRUF => ix::FRUF,
        V => ix::V,
        _ => return None,
    })
}

/// Bits of the tags whose absence is recorded directly (`p`, `sp`, `np` are decided with the
/// p=none fallback, and `v` is always present).
const PLAIN_TAGS_MASK: u32 = ((1 << 16) - 1) & !0b111;

fn parse_disposition<'a>(
    tag: &'static str,
    value: &'a str,
    diags: &mut Diagnostics,
) -> Result<Disposition, &'a str> {
    token(tag, value, Disposition::from_token_lenient, diags).ok_or(value)
}

/// A closed-token value (`str_enum`) read ignoring ASCII case; a case that differed from the
/// token's is noted.
#[inline]
fn token<T: fmt::Display>(
    tag: &str,
    value: &str,
    from_token_lenient: fn(&str) -> Option<(T, bool)>,
    diags: &mut Diagnostics,
) -> Option<T> {
    let (v, case_differs) = from_token_lenient(value)?;
    if case_differs {
        diags.info(code::VALUE_CASE, format!("{tag}={value} read as {tag}={v}"));
    }
    Some(v)
}

/// Where a policy tag's parse left it.
enum Slot<'a> {
    Absent,
    Valid(Disposition),
    Invalid(&'a str),
}

/// Parses one DMARC record (already selected and joined).
pub fn parse(text: &str) -> ParseResult<DmarcRecord, DmarcError> {
    let mut diags = Diagnostics::default();
    let mut classes = Classes::empty();
    classes.index(text.as_bytes());
    let mut items = tag::lex(text, &classes);

    // RFC 9989 §4.7: v must be the first tag, value exactly "DMARC1".
    if let Err(found) = tag::version(&mut items, "DMARC1", Some(code::VERSION_CASE), &mut diags) {
        let error = match found {
            Some(value) => DmarcError::VersionInvalid {
                value: value.to_owned(),
            },
            None => DmarcError::VersionMissing,
        };
        return Err(Rejected::new(error, diags));
    }

    // The fields live in locals and the record is built once, in the return expression, so
    // it is written straight into the caller's slot instead of being moved there.
    let mut adkim = Alignment::Relaxed;
    let mut aspf = Alignment::Relaxed;
    let mut pct = 100;
    let (mut rua, mut ruf, mut frua, mut fruf) = Default::default();
    let mut fo = FailureOptions::default();
    let mut rf = Cow::Borrowed("afrf");
    let mut ri = 86400;
    let mut psd = Psd::Unknown;
    let mut t = TestMode::No;
    let mut fp = None;
    let (mut p_slot, mut sp_slot, mut np_slot) = (Slot::Absent, Slot::Absent, Slot::Absent);
    let mut seen: u32 = 1 << ix::V;

    for item in items {
        let Some((name, value, key, at, raw)) =
            item.tag(Some(code::TAG_EMPTY), code::TAG_SYNTAX, &mut diags)
        else {
            continue;
        };
        let Some(index) = tag_index_of_key(key) else {
            diags.info(code::TAG_UNKNOWN, format!("unknown tag {name}= ignored"));
            continue;
        };
        let canon = TAGS[index];
        if raw != key {
            diags.info(code::TAG_CASE, format!("tag name {name}= read as {canon}="));
        }
        let bit = 1u32 << index;
        if seen & bit != 0 {
            diags.warn(
                code::TAG_DUPLICATE,
                format!("{canon}= appears more than once; the first one is used"),
            );
            continue;
        }
        seen |= bit;
        match index {
            ix::P | ix::SP | ix::NP => {
                let slot = match parse_disposition(canon, value, &mut diags) {
                    Ok(d) => Slot::Valid(d),
                    Err(v) => Slot::Invalid(v),
                };
                match index {
                    ix::P => p_slot = slot,
                    ix::SP => sp_slot = slot,
                    _ => np_slot = slot,
                }
            }
            ix::ADKIM | ix::ASPF => {
                let parsed = token(canon, value, Alignment::from_token_lenient, &mut diags)
                    .or_else(|| {
                        value
                            .eq_ignore_ascii_case("p")
                            .then_some(Alignment::RelaxedMustPass)
                    });
                match parsed {
                    Some(a) => {
                        if a.must_pass() {
                            diags.info(
                                code::EXT_MUST_PASS,
                                format!("{canon}={value}: non-standard must-pass modifier (read as {canon}={a})"),
                            );
                        }
                        if index == ix::ADKIM {
                            adkim = a;
                        } else {
                            aspf = a;
                        }
                    }
                    None => {
                        discard(
                            &mut seen,
                            bit,
                            &mut diags,
                            format!("{canon}={value:?} is not r or s; default r used"),
                        );
                    }
                }
            }
            ix::PCT => match value.parse::<u8>() {
                Ok(n) if n <= 100 && value.bytes().all(|b| b.is_ascii_digit()) => {
                    pct = n;
                    diags.info(
                        code::OBSOLETE_TAG,
                        "pct= is RFC 7489 only; RFC 9989 removed it",
                    );
                }
                _ => {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("pct={value:?} is not an integer 0..100; default 100 used"),
                    );
                }
            },
            ix::RUA | ix::RUF | ix::FRUA | ix::FRUF => {
                let list = match index {
                    ix::RUA => &mut rua,
                    ix::RUF => &mut ruf,
                    ix::FRUA => &mut frua,
                    _ => &mut fruf,
                };
                // Built in place: a list returned by value and then moved here was reloaded
                // before its stores had landed (a measurable stall at this rate).
                let span = (at, at + value.len());
                parse_uri_list(canon, text, span, &classes, &mut diags, list);
                if list.is_empty() {
                    seen &= !bit;
                }
                if matches!(index, ix::FRUA | ix::FRUF) {
                    diags.info(
                        code::EXT_FORWARDER,
                        format!("{canon}=: non-standard DKIM2 forwarder tag"),
                    );
                }
            }
            ix::FO => match FailureOptions::parse(value) {
                Some(parsed) => fo = parsed,
                None => {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("fo={value:?} is not a colon list of 0, 1, d, s; default 0 used"),
                    );
                }
            },
            ix::RF => {
                if let Some(formats) = report_format(value) {
                    rf = formats;
                    diags.info(
                        code::OBSOLETE_TAG,
                        "rf= is RFC 7489 only; RFC 9989 removed it",
                    );
                } else {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("rf={value:?} is not a format list; default afrf used"),
                    );
                }
            }
            ix::RI => match value.parse::<u32>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => {
                    ri = n;
                    diags.info(
                        code::OBSOLETE_TAG,
                        "ri= is RFC 7489 only; RFC 9989 removed it",
                    );
                }
                _ => {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("ri={value:?} is not a 32-bit integer; default 86400 used"),
                    );
                }
            },
            ix::PSD => match token(canon, value, Psd::from_token_lenient, &mut diags) {
                Some(v) => psd = v,
                None => {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("psd={value:?} is not y, n or u; default u used"),
                    );
                }
            },
            ix::T => match token(canon, value, TestMode::from_token_lenient, &mut diags) {
                Some(v) => t = v,
                None => {
                    discard(
                        &mut seen,
                        bit,
                        &mut diags,
                        format!("t={value:?} is not y or n; default n used"),
                    );
                }
            },
            ix::FP => {
                diags.info(
                    code::EXT_FORWARDER,
                    "fp=: non-standard DKIM2 forwarder policy",
                );
                match parse_disposition("fp", value, &mut diags) {
                    Ok(d) => fp = Some(d),
                    Err(v) => {
                        discard(
                            &mut seen,
                            bit,
                            &mut diags,
                            format!("fp={v:?} is not none, quarantine or reject; ignored"),
                        );
                    }
                }
            }
            // "v" is caught by the duplicate check above: it was seen first.
            _ => {}
        }
    }

    if seen & (1 << ix::FO) != 0 && ruf.is_empty() {
        diags.info(
            code::FO_WITHOUT_RUF,
            "fo= has no effect without a valid ruf=",
        );
    }

    let (p, sp, np, policy_bits) =
        match policies(&p_slot, &sp_slot, &np_slot, !rua.is_empty(), &mut diags) {
            Ok(decided) => decided,
            Err(problem) => return Err(Rejected::new(problem, diags)),
        };
    let defaulted = Defaulted(policy_bits | (!seen & PLAIN_TAGS_MASK));
    Ok(Parsed {
        policy: DmarcRecord {
            v: Version,
            p,
            sp,
            np,
            adkim,
            aspf,
            pct,
            rua,
            ruf,
            fo,
            rf,
            ri,
            psd,
            t,
            fp,
            frua,
            fruf,
            defaulted,
        },
        diagnostics: diags,
    })
}

/// The record's `p`, `sp`, `np` and their defaulted bits, once every tag has been read.
#[inline]
fn policies(
    p_slot: &Slot<'_>,
    sp_slot: &Slot<'_>,
    np_slot: &Slot<'_>,
    has_rua: bool,
    diags: &mut Diagnostics,
) -> Result<(Disposition, Disposition, Disposition, u32), DmarcError> {
    // RFC 7489 §6.6.3 / RFC 9989 §4.10.1: a missing or invalid p (or an invalid sp/np) with at
    // least one valid rua URI acts as p=none; without one the record is unusable.
    let mut first_problem: Option<DmarcError> = None;
    for (tag, slot) in [("p", p_slot), ("sp", sp_slot), ("np", np_slot)] {
        if let Slot::Invalid(v) = slot {
            let c = match tag {
                "p" => code::POLICY_INVALID,
                "sp" => code::SP_INVALID,
                _ => code::NP_INVALID,
            };
            diags.error(c, format!("{tag}={v:?} is not none, quarantine or reject"));
            first_problem.get_or_insert(DmarcError::PolicyInvalid {
                tag: Cow::Borrowed(tag),
                value: (*v).to_owned(),
            });
        }
    }
    if matches!(p_slot, Slot::Absent) {
        first_problem.get_or_insert(DmarcError::PolicyMissing);
    }
    let fallback = first_problem.is_some();
    if let Some(problem) = first_problem {
        if !has_rua {
            return Err(problem);
        }
        let what = match &problem {
            DmarcError::PolicyInvalid { tag, value } => format!("{tag}={value:?} is invalid"),
            _ => "p= is missing".to_owned(),
        };
        diags.warn(
            code::POLICY_FALLBACK,
            format!("{what} but the record has a valid rua=, so it is treated as p=none (RFC 7489 §6.6.3, RFC 9989 §4.10.1)"),
        );
    }

    let valid = |s: &Slot| match s {
        Slot::Valid(d) if !fallback => Some(*d),
        _ => None,
    };
    let mut defaulted = 0u32;
    let p = valid(p_slot).unwrap_or(Disposition::None);
    defaulted |= u32::from(fallback) << ix::P;
    // sp keeps its value under the fallback only if it was itself valid.
    let sp = match sp_slot {
        Slot::Valid(d) => *d,
        _ => p,
    };
    defaulted |= u32::from(!matches!(sp_slot, Slot::Valid(_))) << ix::SP;
    let np = match np_slot {
        Slot::Valid(d) => *d,
        _ => sp,
    };
    defaulted |= u32::from(!matches!(np_slot, Slot::Valid(_))) << ix::NP;
    Ok((p, sp, np, defaulted))
}

/// `rf=`: a colon list of report format names (RFC 7489 §6.3), lower-cased; `afrf`, the one
/// format defined, without a copy.
fn report_format(value: &str) -> Option<Cow<'static, str>> {
    let items_ok = !value.is_empty()
        && value.split(':').all(|f| {
            let f = f.trim_matches(is_wsp);
            !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    items_ok.then(|| {
        if value == "afrf" {
            Cow::Borrowed("afrf")
        } else {
            Cow::Owned(value.to_ascii_lowercase())
        }
    })
}

/// A tag whose value is invalid: it keeps its default (its bit leaves `seen`) and the warning
/// says which default.
#[cold]
fn discard(seen: &mut u32, bit: u32, diags: &mut Diagnostics, message: String) {
    *seen &= !bit;
    diags.warn(code::VALUE_INVALID, message);
}
