//! Names as the resolver takes them. Its methods take a [`DomainName`], validated once where it
//! entered (the socket, the DNS front-end, the CLI, a record); a caller holding text (a library
//! user, a test) passes `&str` and it is validated here, once, with the DNS spelling
//! ([`DomainName::dns`]). Nothing below this point checks a name again.

pub use crate::model::name::{AuthorDomain, DomainName, NameError};

use super::ResolveError;

fn invalid(input: &str, e: NameError) -> ResolveError {
    ResolveError::InvalidName(format!("{input:?}: {e}").into())
}

/// A name the resolver can ask about.
pub trait AsName {
    /// The validated name (shared, not copied, when it already is one).
    fn to_name(&self) -> Result<DomainName, ResolveError>;
}

impl AsName for DomainName {
    fn to_name(&self) -> Result<DomainName, ResolveError> {
        Ok(self.clone())
    }
}

impl AsName for str {
    fn to_name(&self) -> Result<DomainName, ResolveError> {
        DomainName::dns(self).map_err(|e| invalid(self, e))
    }
}

impl AsName for String {
    fn to_name(&self) -> Result<DomainName, ResolveError> {
        self.as_str().to_name()
    }
}

impl AsName for AuthorDomain {
    fn to_name(&self) -> Result<DomainName, ResolveError> {
        match self {
            AuthorDomain::Dns(d) => Ok(d.clone()),
            AuthorDomain::Unformable(s) => Err(invalid(s, NameError::TooLong)),
        }
    }
}

/// An author (From) domain DMARC can be asked about.
pub trait AsAuthor {
    /// The validated author domain.
    fn to_author(&self) -> Result<AuthorDomain, ResolveError>;
}

impl AsAuthor for AuthorDomain {
    fn to_author(&self) -> Result<AuthorDomain, ResolveError> {
        Ok(self.clone())
    }
}

impl AsAuthor for DomainName {
    fn to_author(&self) -> Result<AuthorDomain, ResolveError> {
        Ok(AuthorDomain::Dns(self.clone()))
    }
}

impl AsAuthor for str {
    fn to_author(&self) -> Result<AuthorDomain, ResolveError> {
        AuthorDomain::parse(self).map_err(|e| invalid(self, e))
    }
}

impl AsAuthor for String {
    fn to_author(&self) -> Result<AuthorDomain, ResolveError> {
        self.as_str().to_author()
    }
}
