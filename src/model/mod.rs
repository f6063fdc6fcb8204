//! The value types both sides of the wire share: what the resolver answers and the protocol
//! carries. postcard is positional, so the order of every enum's variants and every struct's
//! fields here IS the binary wire format. `model` imports nothing from `resolve` or `serve`
//! (checked by `tests/layering.rs`); only `policy` (the parsed records) and serde.

mod alloc;
pub mod answer;
pub mod dmarc;
pub mod name;
pub mod spf;
pub mod stats;

pub use answer::{
    Answer, Data, DnssecStatus, Found, KINDS, Kind, PolicyAnswer, Rcode, Source, WireRecords,
};
pub use name::{AuthorDomain, DomainName, NameError};
