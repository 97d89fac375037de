//! The vendor portal link sent in the activation mail.

use std::fmt;

use super::{DomainError, text_serde};

/// Where the product is downloaded: an absolute https URL with a host. Plain http is refused:
/// the link leads to a sign-in page.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DownloadUrl(String);

impl DownloadUrl {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        // Checked before the URL parser sees it: that parser drops tabs and line breaks.
        let s = super::no_controls("download URL", s)?.trim();
        let err = |reason: &str| DomainError::DownloadUrl {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(err("it must be an https:// URL"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err("it has no host"));
        }
        Ok(Self(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DownloadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

text_serde!(DownloadUrl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        let u = DownloadUrl::parse("https://manage.autodesk.com/products?x=1&y=2").unwrap();
        assert_eq!(u.as_str(), "https://manage.autodesk.com/products?x=1&y=2");
        for bad in [
            "http://x.example/dl",
            "ftp://x.example",
            "not a url",
            "https://",
            "",
        ] {
            let err = DownloadUrl::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(
            DownloadUrl::parse("http://x")
                .unwrap_err()
                .to_string()
                .contains("https://")
        );
        for bad in [
            "https://x.example/dl\r\nBcc: a@b.example",
            "https://x.example/d\tl",
            "https://x.example/dl\n",
            "\rhttps://x.example/dl",
        ] {
            let err = DownloadUrl::parse(bad).unwrap_err();
            assert!(matches!(err, DomainError::Control { .. }), "{bad:?}");
            assert!(err.to_string().contains("download URL"), "{err}");
        }
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<DownloadUrl>(&json).unwrap(), u);
    }
}
