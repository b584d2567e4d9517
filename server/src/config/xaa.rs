//! `[xaa]`: cross-app access settings (RFC 8693 delegation and the ID-JAG targets we issue
//! for), parsed from the file and validated once at start.

use serde::Deserialize;

use super::{check_range, ConfigError};
use crate::xaa::IdJagTarget;

/// Longest lifetime `xaa.max_ttl_s` may allow, in seconds (a day).
const MAX_DELEGATED_TTL_S: u64 = 86_400;
/// Longest lifetime of an ID-JAG (`max_ttl_s` of a target), in seconds. The draft's examples
/// use 300; an assertion is meant to be redeemed at once.
const MAX_ID_JAG_TTL_S: u64 = 3600;
/// Most `[[xaa.id_jag_targets]]`.
const MAX_ID_JAG_TARGETS: usize = 64;

/// `[xaa]` after validation.
#[derive(Debug, Clone)]
pub struct XaaConfig {
    /// Longest lifetime of a delegated token (it also ends no later than every input token).
    pub max_ttl_s: u64,
    /// `audience`/`resource` values delegation may issue for; `None`: the calling client's
    /// audiences (its first one is the default target when the request names none).
    pub audiences: Option<Vec<String>>,
    /// Resource authorization servers we issue ID-JAGs for.
    pub id_jag_targets: Vec<IdJagTarget>,
}

impl Default for XaaConfig {
    fn default() -> Self {
        XaaConfig {
            max_ttl_s: 300,
            audiences: None,
            id_jag_targets: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileXaa {
    max_ttl_s: Option<u64>,
    audiences: Option<Vec<String>>,
    #[serde(default)]
    id_jag_targets: Vec<FileIdJagTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdJagTarget {
    issuer: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    max_ttl_s: Option<u64>,
}

impl XaaConfig {
    /// The file's `[xaa]` over the defaults.
    pub(super) fn from_file(file: FileXaa) -> XaaConfig {
        let defaults = XaaConfig::default();
        XaaConfig {
            max_ttl_s: file.max_ttl_s.unwrap_or(defaults.max_ttl_s),
            audiences: file.audiences,
            id_jag_targets: file
                .id_jag_targets
                .into_iter()
                .map(|t| IdJagTarget {
                    issuer: t.issuer,
                    resources: t.resources,
                    scopes: t.scopes,
                    max_ttl_s: t.max_ttl_s.unwrap_or(300),
                })
                .collect(),
        }
    }

    /// Ranges, and targets that could never be used or would be confused with us.
    pub(super) fn validate(&self, our_issuer: &str) -> Result<(), ConfigError> {
        check_range(
            "xaa.max_ttl_s",
            self.max_ttl_s as usize,
            1,
            MAX_DELEGATED_TTL_S as usize,
        )?;
        if let Some(audiences) = &self.audiences {
            if audiences.is_empty() || audiences.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid(
                    "xaa.audiences must list at least one non-empty audience (or be left out: \
                     then each client's own audiences)"
                        .into(),
                ));
            }
        }
        if self.id_jag_targets.len() > MAX_ID_JAG_TARGETS {
            return Err(ConfigError::Invalid(format!(
                "at most {MAX_ID_JAG_TARGETS} [[xaa.id_jag_targets]] are accepted"
            )));
        }
        for (idx, target) in self.id_jag_targets.iter().enumerate() {
            let name = format!("xaa.id_jag_targets[{idx}]");
            if target.issuer.is_empty() || target.issuer == our_issuer {
                return Err(ConfigError::Invalid(format!(
                    "{name}.issuer must name another authorization server than auth.issuer"
                )));
            }
            if self.id_jag_targets[..idx]
                .iter()
                .any(|t| t.issuer == target.issuer)
            {
                return Err(ConfigError::Invalid(format!(
                    "{name}.issuer {:?} appears twice",
                    target.issuer
                )));
            }
            if target.resources.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "{name}.resources must not hold an empty value"
                )));
            }
            check_range(
                &format!("{name}.max_ttl_s"),
                target.max_ttl_s as usize,
                1,
                MAX_ID_JAG_TTL_S as usize,
            )?;
        }
        Ok(())
    }
}

/// `server.public_url`: an absolute `http(s)` URL without query or fragment; a trailing `/` is
/// dropped so paths can be appended.
pub(super) fn public_url(url: &str) -> Result<String, ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(['?', '#'])
        && url.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ConfigError::Invalid(format!(
            "server.public_url must be an absolute http:// or https:// URL without query or \
             fragment (e.g. https://auth.example.com), got {url:?}"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    #[test]
    fn xaa_keys_parse_validate_and_default() {
        let c = Config::default();
        assert_eq!(c.xaa.max_ttl_s, 300);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        let text = r#"
[server]
public_url = "https://auth.example/"

[xaa]
max_ttl_s = 120
audiences = ["api"]

[[xaa.id_jag_targets]]
issuer = "https://as.example"
resources = ["https://api.example/"]
scopes = ["read"]
"#;
        let c = Config::from_toml(text, Path::new(".")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.public_url(), "https://auth.example");
        assert_eq!(c.xaa.max_ttl_s, 120);
        assert_eq!(c.xaa.audiences.as_deref(), Some(&["api".to_owned()][..]));
        assert_eq!(c.xaa.id_jag_targets[0].max_ttl_s, 300);
        for (text, key) in [
            ("[xaa]\nmax_ttl_s = 0\n", "xaa.max_ttl_s"),
            ("[xaa]\naudiences = []\n", "xaa.audiences"),
            (
                "[[xaa.id_jag_targets]]\nissuer = \"subzero\"\n",
                "xaa.id_jag_targets[0].issuer",
            ),
            (
                "[[xaa.id_jag_targets]]\nissuer = \"https://as\"\nmax_ttl_s = 7200\n",
                "xaa.id_jag_targets[0].max_ttl_s",
            ),
            ("[server]\npublic_url = \"ftp://x\"\n", "server.public_url"),
            (
                "[server]\npublic_url = \"https://x/?a\"\n",
                "server.public_url",
            ),
        ] {
            let err = Config::from_toml(text, Path::new("."))
                .and_then(|c| c.validate().map(|()| c))
                .err()
                .unwrap_or_else(|| panic!("{text:?} was accepted"));
            assert!(err.to_string().contains(key), "{text:?}: {err}");
        }
        let err = Config::from_toml("[xaa]\nmax_ttl = 5\n", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("max_ttl"), "{err}");
    }

    #[test]
    fn an_id_jag_issuer_must_accept_our_issuer_as_audience() {
        let base = "[[auth.trusted_issuers]]\nissuer = \"https://idp\"\njwks_file = \"i.json\"\nid_jag = true\n";
        let c = Config::from_toml(base, Path::new(".")).unwrap();
        assert!(c.auth.trusted_issuers[0].id_jag);
        c.validate().unwrap();
        let narrow = format!("{base}audiences = [\"api\"]\n");
        let err = Config::from_toml(&narrow, Path::new("."))
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("id_jag"), "{err}");
        let wide = format!("{base}audiences = [\"api\", \"subzero\"]\n");
        let c = Config::from_toml(&wide, Path::new(".")).unwrap();
        c.validate().unwrap();
    }
}
