//! The rules of `[[ratelimit.rules]]`: by key prefix (for `POST /v1/ratelimit/check`, first
//! matching prefix wins) or by route class (the implicit per-source limit on every request).

/// A rule for `POST /v1/ratelimit/check` keys.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRule {
    /// Keys starting with this match (printable ASCII, 1 to `MAX_KEY_BYTES` bytes).
    pub key_prefix: String,
    /// Sustained units per second.
    pub rate_per_s: f64,
    /// Units at once.
    pub burst: u32,
    /// Evaluate and count, never deny.
    pub shadow: bool,
}

/// A per-source rule for one class of routes.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    /// The class it limits (`Default`: every class without a rule of its own).
    pub route: RouteClass,
    /// Sustained requests per second per source address, for the whole server.
    pub rate_per_s: f64,
    /// Requests at once per source address, for the whole server.
    pub burst: u32,
    /// Evaluate and count, never refuse.
    pub shadow: bool,
}

/// Which operation a request is, for per-source limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/v1/authenticate` (GET, POST) and its batch.
    Authenticate,
    /// `POST /v1/token`.
    Token,
    /// `POST /v1/revoke`.
    Revoke,
    /// Permission checks and relationship reads and writes.
    Permissions,
    /// `/v1/vault/...`.
    Vault,
    /// `/v1/xaa/...`.
    Xaa,
    /// `POST /v1/ratelimit/check`.
    RateLimit,
    /// `/v1/keys/...` and other admin operations.
    Admin,
    /// Health, metrics, JWKS and metadata documents.
    Public,
    /// Every class without a rule of its own (and unknown paths).
    Default,
}

impl RouteClass {
    /// Every class, indexed by `class as usize`.
    pub const ALL: [RouteClass; 10] = [
        RouteClass::Authenticate,
        RouteClass::Token,
        RouteClass::Revoke,
        RouteClass::Permissions,
        RouteClass::Vault,
        RouteClass::Xaa,
        RouteClass::RateLimit,
        RouteClass::Admin,
        RouteClass::Public,
        RouteClass::Default,
    ];

    /// The config and metrics name.
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::Authenticate => "authenticate",
            RouteClass::Token => "token",
            RouteClass::Revoke => "revoke",
            RouteClass::Permissions => "permissions",
            RouteClass::Vault => "vault",
            RouteClass::Xaa => "xaa",
            RouteClass::RateLimit => "ratelimit",
            RouteClass::Admin => "admin",
            RouteClass::Public => "public",
            RouteClass::Default => "default",
        }
    }

    /// Parses a config name.
    pub fn parse(name: &str) -> Option<RouteClass> {
        RouteClass::ALL.into_iter().find(|c| c.label() == name)
    }

    /// The class of a request path (the method does not change it).
    pub fn of_path(path: &str) -> RouteClass {
        match path {
            "/v1/authenticate" | "/v1/authenticate/batch" => RouteClass::Authenticate,
            "/v1/token" => RouteClass::Token,
            "/v1/revoke" => RouteClass::Revoke,
            "/v1/permissions/check" | "/v1/relationships" => RouteClass::Permissions,
            "/v1/ratelimit/check" => RouteClass::RateLimit,
            "/healthz"
            | "/metrics"
            | "/.well-known/jwks.json"
            | "/.well-known/oauth-authorization-server" => RouteClass::Public,
            p if p.starts_with("/v1/vault") => RouteClass::Vault,
            p if p.starts_with("/v1/xaa/") => RouteClass::Xaa,
            p if p.starts_with("/v1/keys/") => RouteClass::Admin,
            p if p.starts_with("/v1/ext-authz/") => RouteClass::Authenticate,
            _ => RouteClass::Default,
        }
    }
}

/// Index of the first rule whose prefix starts `key`.
pub fn match_key(rules: &[KeyRule], key: &str) -> Option<usize> {
    rules.iter().position(|r| key.starts_with(&r.key_prefix))
}

/// Whether `prefix` may name a rule: 1 to `MAX_KEY_BYTES` printable ASCII bytes, so it can
/// be a metrics label and a structured-field string as it is.
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=super::MAX_KEY_BYTES).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str) -> KeyRule {
        KeyRule {
            key_prefix: prefix.into(),
            rate_per_s: 1.0,
            burst: 1,
            shadow: false,
        }
    }

    #[test]
    fn the_first_matching_prefix_wins() {
        let rules = [rule("login:admin"), rule("login:"), rule("l")];
        assert_eq!(match_key(&rules, "login:admin:7"), Some(0));
        assert_eq!(match_key(&rules, "login:bob"), Some(1));
        assert_eq!(match_key(&rules, "lx"), Some(2));
        assert_eq!(match_key(&rules, "signup:x"), None);
    }

    #[test]
    fn route_classes_by_path_and_name() {
        assert_eq!(
            RouteClass::of_path("/v1/authenticate"),
            RouteClass::Authenticate
        );
        assert_eq!(RouteClass::of_path("/v1/vault/a"), RouteClass::Vault);
        assert_eq!(RouteClass::of_path("/v1/xaa/channel/x"), RouteClass::Xaa);
        assert_eq!(RouteClass::of_path("/nope"), RouteClass::Default);
        for (i, class) in RouteClass::ALL.into_iter().enumerate() {
            assert_eq!(class as usize, i);
            assert_eq!(RouteClass::parse(class.label()), Some(class));
        }
        assert_eq!(RouteClass::parse("Token"), None);
    }

    #[test]
    fn prefixes_are_printable_and_bounded() {
        assert!(valid_prefix("login:"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("a b"));
        assert!(!valid_prefix("a\"b"));
        assert!(!valid_prefix(&"x".repeat(257)));
    }
}
