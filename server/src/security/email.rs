//! Disposable e-mail domains: the CC0 list shipped in `server/data/disposable_email_domains.txt`
//! (source, commit and date in its header), embedded at build time and looked up as a hashed
//! set, where a subdomain of a listed domain matches too.

use std::collections::HashSet;

/// The shipped list.
const EMBEDDED: &str = include_str!("../../data/disposable_email_domains.txt");

/// A set of disposable domains (lowercase, no trailing dot).
#[derive(Debug, Clone)]
pub struct DisposableDomains {
    domains: HashSet<Box<str>>,
}

impl DisposableDomains {
    /// The shipped list.
    pub fn embedded() -> DisposableDomains {
        DisposableDomains::from_text(EMBEDDED)
    }

    /// One domain per line; blank lines and lines starting with `#` are skipped.
    pub fn from_text(text: &str) -> DisposableDomains {
        let domains = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.trim_end_matches('.')
                    .to_ascii_lowercase()
                    .into_boxed_str()
            })
            .collect();
        DisposableDomains { domains }
    }

    /// How many domains are listed.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// The listed domain `domain` is or is a subdomain of (`domain` lowercase), if any.
    pub fn listed<'a>(&self, domain: &'a str) -> Option<&'a str> {
        let mut rest = domain;
        loop {
            if self.domains.contains(rest) {
                return Some(rest);
            }
            // The next parent; a bare top-level domain is never listed on its own.
            rest = &rest[rest.find('.')? + 1..];
            if !rest.contains('.') {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DisposableDomains;

    #[test]
    fn the_shipped_list_matches_listed_domains_and_their_subdomains_only() {
        let d = DisposableDomains::embedded();
        assert!(d.len() > 8000, "{} domains", d.len());
        assert_eq!(d.listed("mailinator.com"), Some("mailinator.com"));
        assert_eq!(d.listed("a.b.mailinator.com"), Some("mailinator.com"));
        assert_eq!(d.listed("yopmail.com"), Some("yopmail.com"));
        for benign in [
            "gmail.com",
            "example.com",
            "mailinator-news.com",
            "com",
            "mailinator.com.evil",
        ] {
            assert_eq!(d.listed(benign), None, "{benign}");
        }
        let small = DisposableDomains::from_text("# c\n\nTemp.Example.\n");
        assert_eq!(small.len(), 1);
        assert_eq!(small.listed("x.temp.example"), Some("temp.example"));
        assert_eq!(small.listed("example"), None);
    }
}
