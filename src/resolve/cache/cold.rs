//! The cache's compact form of a parsed answer (DMARC, SPF, DKIM key, ATPS): the TXT records it
//! was parsed from and what parsing does not give back (the response code, TTL, DNSSEC status,
//! CNAME target, fingerprint and wire records). A parsed record costs two to four times its
//! text (directives, include targets, report URIs, the decoded key bytes beside their base64,
//! each its own allocation), so the cache keeps the parsed answer only while it is in use (its
//! hot list, `resolve::cache`) and rebuilds it from this form on the next hit. The parsers are
//! pure, so the rebuilt answer is the one first parsed; [`Cold::of`] checks that once, and an
//! answer it cannot give back exactly is kept parsed instead.

use crate::model::DnssecStatus;
use crate::model::answer::{Kept, KeptTxt, KeptWire, alloc_size};
use crate::resolve::answer::{Answer, Data, Kind, Rcode, fingerprint, parse_txt};
use crate::resolve::upstream::Records;

/// A parsed answer's records and metadata: 32 bytes beside the record's text for the usual
/// answer (one TXT record, found at the name asked, its wire form rebuilt from the text).
#[derive(Debug)]
pub struct Cold {
    /// The one TXT record at the name (empty when there are none or several: [`Rare::txt`]).
    text: Box<str>,
    /// What few answers have.
    rare: Option<Box<Rare>>,
    ttl: u32,
    rcode: Rcode,
    dnssec: DnssecStatus,
    /// Where the records were found: at the name asked (the usual case), or [`Rare::found_at`].
    found_at_name: bool,
    /// The wire records are [`KeptWire::FromRaw`] (the usual case), or [`Rare::wire`].
    wire_from_raw: bool,
}

/// The parts of a compact answer that few have.
#[derive(Debug, Default)]
struct Rare {
    /// Every TXT record, when there are none or several.
    txt: Option<Box<[Box<str>]>>,
    /// A CNAME target, or none (no records).
    found_at: Option<Box<str>>,
    /// The wire records when not rebuilt from the text.
    wire: KeptWire,
}

impl Cold {
    /// The compact form of `answer`, when it has one: a parsing kind's answer whose TXT records
    /// are known (not one restored from a snapshot) and which [`Cold::expand`] gives back
    /// exactly (its value, its fingerprint, its TXT records and its wire records).
    pub fn of(answer: &Answer) -> Option<Cold> {
        if !matches!(
            answer.data,
            Data::Dmarc(_) | Data::Spf(_) | Data::DkimKey(_) | Data::Atps(_)
        ) {
            return None;
        }
        let mut rare = Rare::default();
        let text: Box<str> = match &answer.kept.txt {
            KeptTxt::Unknown => return None,
            KeptTxt::Raw => answer.raw.as_deref()?.into(),
            KeptTxt::All(t) if t.len() == 1 => t[0].as_str().into(),
            KeptTxt::All(t) => {
                rare.txt = Some(t.iter().map(|s| s.as_str().into()).collect());
                "".into()
            }
        };
        let found_at_name = answer.found_at.as_deref() == Some(answer.name.as_str());
        if !found_at_name {
            rare.found_at = answer.found_at.as_deref().map(Box::from);
        }
        let wire_from_raw = answer.kept.wire == KeptWire::FromRaw;
        if !wire_from_raw {
            rare.wire = answer.kept.wire.clone();
        }
        let usual = rare.txt.is_none() && rare.found_at.is_none() && rare.wire == KeptWire::Unknown;
        let cold = Cold {
            text,
            rare: (!usual).then(|| Box::new(rare)),
            ttl: answer.ttl,
            rcode: answer.rcode,
            dnssec: answer.dnssec,
            found_at_name,
            wire_from_raw,
        };
        let back = cold.expand(answer.kind, &answer.name);
        (back == *answer && back.txt() == answer.txt() && back.wire() == answer.wire())
            .then_some(cold)
    }

    /// The answer for `kind` at `name` rebuilt: its records parsed again.
    pub fn expand(&self, kind: Kind, name: &str) -> Answer {
        let rare = self.rare.as_deref();
        let txt: Vec<String> = match rare.and_then(|r| r.txt.as_deref()) {
            Some(t) => t.iter().map(|s| s.to_string()).collect(),
            None => vec![self.text.to_string()],
        };
        let (data, index) = parse_txt(kind, &txt);
        let records = Records::Txt(txt);
        let fingerprint = fingerprint(&records);
        let Records::Txt(txt) = records else {
            unreachable!("built as TXT just above")
        };
        let raw = index.and_then(|i| txt.get(i).cloned());
        let txt = if txt.len() == 1 && raw.as_deref() == Some(txt[0].as_str()) {
            KeptTxt::Raw
        } else {
            KeptTxt::All(Box::new(txt.into()))
        };
        let found_at = if self.found_at_name {
            Some(name.to_owned())
        } else {
            rare.and_then(|r| r.found_at.as_deref()).map(str::to_owned)
        };
        let wire = match rare {
            _ if self.wire_from_raw => KeptWire::FromRaw,
            Some(r) => r.wire.clone(),
            None => KeptWire::Unknown,
        };
        Answer {
            kind,
            name: name.to_owned(),
            found_at,
            rcode: self.rcode,
            ttl: self.ttl,
            dnssec: self.dnssec,
            data,
            fingerprint,
            raw,
            kept: Kept::with(txt, wire),
        }
    }

    /// Heap bytes held, its own allocation included, in allocator chunks.
    pub fn weight(&self) -> u32 {
        let rare = self.rare.as_deref().map_or(0, |r| {
            let txt = r.txt.as_deref().map_or(0, |t| {
                alloc_size(std::mem::size_of_val(t))
                    + t.iter().map(|s| alloc_size(s.len())).sum::<usize>()
            });
            let wire = match &r.wire {
                KeptWire::Stored(w) => {
                    alloc_size(std::mem::size_of_val(w.as_ref())) + alloc_size(w.bytes.len())
                }
                _ => 0,
            };
            alloc_size(std::mem::size_of::<Rare>())
                + txt
                + r.found_at.as_ref().map_or(0, |s| alloc_size(s.len()))
                + wire
        });
        let total = alloc_size(std::mem::size_of::<Cold>()) + alloc_size(self.text.len()) + rare;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hickory_resolver::proto::op::ResponseCode;

    use super::*;
    use crate::model::answer::txt_wire;
    use crate::resolve::upstream::{RawAnswer, Records};

    const DKIM: &str = include_str!("../../../tests/data/dkim/rsa2048.spki.b64");

    /// With `wire`, the records in wire form as an upstream gives them, owned by `found_at`
    /// (so rebuilt from the text when that is the name, kept as given otherwise).
    fn answer(kind: Kind, name: &str, found_at: &str, txt: &[&str], wire: bool) -> Answer {
        let wire = (wire && txt.len() == 1)
            .then(|| txt_wire(found_at, 300, txt[0]))
            .flatten();
        Answer::from_raw(
            kind,
            name,
            RawAnswer {
                found_at: Some(found_at.to_owned()),
                negative_at: None,
                rcode: ResponseCode::NoError,
                ttl: 300,
                dnssec: DnssecStatus::Secure,
                records: Records::Txt(txt.iter().map(|s| s.to_string()).collect()),
                wire,
                elapsed: Duration::ZERO,
            },
        )
    }

    #[test]
    fn a_parsed_answer_is_rebuilt_exactly_from_its_compact_form() {
        let dkim = format!("v=DKIM1; k=rsa; p={}", DKIM.trim());
        let cases: Vec<(Kind, &str, &str, Vec<&str>)> = vec![
            (
                Kind::Spf,
                "a.example",
                "a.example",
                vec!["v=spf1 include:_spf.b.example -all"],
            ),
            (
                Kind::Spf,
                "a.example",
                "a.example",
                vec!["google-site-verification=x", "v=spf1 mx ~all"],
            ),
            (
                Kind::Spf,
                "a.example",
                "a.example",
                vec!["v=spf1 -all", "v=spf1 +all"],
            ),
            (
                Kind::Spf,
                "a.example",
                "a.example",
                vec!["v=spf1 ip4:300.1.1.1 -all"],
            ),
            (Kind::Spf, "a.example", "a.example", vec!["just text"]),
            (Kind::Spf, "a.example", "a.example", vec![]),
            (
                Kind::Dmarc,
                "_dmarc.a.example",
                "_dmarc.a.example",
                vec!["v=DMARC1; p=reject; rua=mailto:d@a.example"],
            ),
            (
                Kind::Dmarc,
                "_dmarc.a.example",
                "_dmarc.a.example",
                vec!["v=DMARC1; p=bogus"],
            ),
            (
                Kind::Dmarc,
                "_dmarc.a.example",
                "_dmarc.other.example",
                vec!["v=DMARC1; p=none"],
            ),
            (
                Kind::DkimKey,
                "s1._domainkey.a.example",
                "s1._domainkey.a.example",
                vec![&dkim],
            ),
            (
                Kind::DkimKey,
                "s1._domainkey.a.example",
                "s1._domainkey.a.example",
                vec!["v=DKIM1; p="],
            ),
            (
                Kind::Atps,
                "x._atps.a.example",
                "x._atps.a.example",
                vec!["v=ATPS1;"],
            ),
        ];
        for (kind, name, found_at, txt) in cases {
            for wire in [false, true] {
                let a = answer(kind, name, found_at, &txt, wire);
                let cold =
                    Cold::of(&a).unwrap_or_else(|| panic!("{kind:?} {txt:?}: no compact form"));
                let back = cold.expand(kind, name);
                assert_eq!(back, a, "{kind:?} {txt:?}");
                assert_eq!(back.txt(), a.txt(), "{kind:?} {txt:?}");
                assert_eq!(back.wire(), a.wire(), "{kind:?} {txt:?}");
                assert_eq!(back.encoded(), a.encoded(), "{kind:?} {txt:?}");
                // Smaller than the parsed answer it stands for (the DKIM key: its text only).
                assert!(
                    cold.weight() < a.weight(),
                    "{kind:?} {txt:?}: {} >= {}",
                    cold.weight(),
                    a.weight()
                );
            }
        }
    }

    #[test]
    fn answers_without_records_to_parse_have_no_compact_form() {
        let mut restored = answer(Kind::Spf, "a.example", "a.example", &["v=spf1 -all"], false);
        restored.kept = Kept::default();
        assert!(Cold::of(&restored).is_none(), "TXT records not known");
        let nx = Answer::nxdomain(Kind::Spf, "a.example", 60);
        assert!(Cold::of(&nx).is_none());
    }
}
