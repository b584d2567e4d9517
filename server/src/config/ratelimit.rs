//! `[[ratelimit.rules]]`: key-prefix rules for `POST /v1/ratelimit/check` and route-class
//! rules for the per-source limit on every request, parsed and validated once at start.

use serde::Deserialize;

use super::ConfigError;
use crate::ratelimit::gcra::{MAX_BURST, MAX_RATE_PER_S, MIN_RATE_PER_S};
use crate::ratelimit::rules::valid_prefix;
use crate::ratelimit::{KeyRule, RouteClass, RouteRule};

/// Most `[[ratelimit.rules]]` (key and route rules together): matching is a linear scan.
pub const MAX_RULES: usize = 256;
/// Most keys `ratelimit.max_tracked_keys` may allow per shard.
pub const MAX_TRACKED_KEYS: usize = 1 << 24;

/// One `[[ratelimit.rules]]` table: exactly one of `key_prefix` and `route`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRule {
    key_prefix: Option<String>,
    route: Option<String>,
    rate_per_s: f64,
    burst: u32,
    #[serde(default)]
    shadow: bool,
}

/// A rule's rate and burst, range-checked.
fn check_rate(i: usize, rate_per_s: f64, burst: u32) -> Result<(), ConfigError> {
    if !(MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&rate_per_s) {
        return Err(ConfigError::Invalid(format!(
            "ratelimit.rules[{i}].rate_per_s must be between {MIN_RATE_PER_S} and {MAX_RATE_PER_S}, got {rate_per_s}"
        )));
    }
    if !(1..=MAX_BURST).contains(&burst) {
        return Err(ConfigError::Invalid(format!(
            "ratelimit.rules[{i}].burst must be between 1 and {MAX_BURST}, got {burst}"
        )));
    }
    Ok(())
}

/// Splits the file's rules into key rules and route rules, checking each.
pub(super) fn parse_rules(
    rules: Vec<FileRule>,
) -> Result<(Vec<KeyRule>, Vec<RouteRule>), ConfigError> {
    if rules.len() > MAX_RULES {
        return Err(ConfigError::Invalid(format!(
            "at most {MAX_RULES} [[ratelimit.rules]], got {}",
            rules.len()
        )));
    }
    let (mut keys, mut routes) = (Vec::new(), Vec::<RouteRule>::new());
    for (i, r) in rules.into_iter().enumerate() {
        check_rate(i, r.rate_per_s, r.burst)?;
        match (r.key_prefix, r.route) {
            (Some(key_prefix), None) => {
                if !valid_prefix(&key_prefix) {
                    return Err(ConfigError::Invalid(format!(
                        "ratelimit.rules[{i}].key_prefix must be 1 to 256 printable ASCII characters without spaces, quotes or backslashes, got {key_prefix:?}"
                    )));
                }
                if keys.iter().any(|k: &KeyRule| k.key_prefix == key_prefix) {
                    return Err(ConfigError::Invalid(format!(
                        "ratelimit.rules[{i}]: key_prefix {key_prefix:?} appears twice"
                    )));
                }
                keys.push(KeyRule {
                    key_prefix,
                    rate_per_s: r.rate_per_s,
                    burst: r.burst,
                    shadow: r.shadow,
                });
            }
            (None, Some(route)) => {
                let Some(class) = RouteClass::parse(&route) else {
                    let names: Vec<&str> = RouteClass::ALL.iter().map(|c| c.label()).collect();
                    return Err(ConfigError::Invalid(format!(
                        "ratelimit.rules[{i}].route {route:?} is not one of {}",
                        names.join(", ")
                    )));
                };
                if routes.iter().any(|r| r.route == class) {
                    return Err(ConfigError::Invalid(format!(
                        "ratelimit.rules[{i}]: route {route:?} appears twice"
                    )));
                }
                routes.push(RouteRule {
                    route: class,
                    rate_per_s: r.rate_per_s,
                    burst: r.burst,
                    shadow: r.shadow,
                });
            }
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "ratelimit.rules[{i}] needs exactly one of key_prefix and route"
                )))
            }
        }
    }
    Ok((keys, routes))
}

/// The route rules in force: the configured ones, plus `[ratelimit] per_ip_rps`/`per_ip_burst`
/// as the `default` route rule (burst 0: one second's worth). Both at once is an error.
pub(super) fn with_per_ip_default(
    mut routes: Vec<RouteRule>,
    per_ip_rps: u32,
    per_ip_burst: u32,
) -> Result<Vec<RouteRule>, ConfigError> {
    if per_ip_rps == 0 {
        return Ok(routes);
    }
    if routes.iter().any(|r| r.route == RouteClass::Default) {
        return Err(ConfigError::Invalid(
            "set either [ratelimit] per_ip_rps or a [[ratelimit.rules]] route = \"default\" rule, not both".into(),
        ));
    }
    let burst = if per_ip_burst == 0 {
        per_ip_rps
    } else {
        per_ip_burst
    };
    check_rate(routes.len(), f64::from(per_ip_rps), burst)?;
    routes.push(RouteRule {
        route: RouteClass::Default,
        rate_per_s: f64::from(per_ip_rps),
        burst,
        shadow: false,
    });
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("."))
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn key_and_route_rules_parse_in_order() {
        let c = load(
            "[[ratelimit.rules]]\nkey_prefix = \"login:\"\nrate_per_s = 10.0\nburst = 20\nshadow = false\n\
             [[ratelimit.rules]]\nkey_prefix = \"signup:\"\nrate_per_s = 0.5\nburst = 3\nshadow = true\n\
             [[ratelimit.rules]]\nroute = \"token\"\nrate_per_s = 5\nburst = 10\n",
        )
        .unwrap();
        let r = &c.ratelimit;
        assert_eq!(r.key_rules.len(), 2);
        assert_eq!(r.key_rules[1].key_prefix, "signup:");
        assert!(r.key_rules[1].shadow);
        assert_eq!(r.route_rules.len(), 1);
        assert_eq!(r.route_rules[0].route, crate::ratelimit::RouteClass::Token);
    }

    #[test]
    fn the_old_per_ip_keys_are_the_default_route_rule() {
        let c = load("[ratelimit]\nper_ip_rps = 5\n").unwrap();
        let d = &c.ratelimit.route_rules;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].route, crate::ratelimit::RouteClass::Default);
        assert_eq!((d[0].rate_per_s, d[0].burst), (5.0, 5));
        let both = load(
            "[ratelimit]\nper_ip_rps = 5\n[[ratelimit.rules]]\nroute = \"default\"\nrate_per_s = 1\nburst = 1\n",
        );
        assert!(both.unwrap_err().contains("not both"));
    }

    #[test]
    fn bad_rules_are_config_errors() {
        let cases = [
            (
                "key_prefix = \"a:\"\nrate_per_s = 1\nburst = 1\nlimit = 3\n",
                "unknown field",
            ),
            (
                "key_prefix = \"a:\"\nroute = \"token\"\nrate_per_s = 1\nburst = 1\n",
                "exactly one",
            ),
            ("rate_per_s = 1\nburst = 1\n", "exactly one"),
            (
                "route = \"tokens\"\nrate_per_s = 1\nburst = 1\n",
                "is not one of",
            ),
            (
                "key_prefix = \"a:\"\nrate_per_s = 0\nburst = 1\n",
                "rate_per_s",
            ),
            ("key_prefix = \"a:\"\nrate_per_s = 1\nburst = 0\n", "burst"),
            (
                "key_prefix = \"a b\"\nrate_per_s = 1\nburst = 1\n",
                "printable",
            ),
            ("key_prefix = \"a:\"\nrate_per_s = 1\n", "missing field"),
        ];
        for (rule, want) in cases {
            let err = load(&format!("[[ratelimit.rules]]\n{rule}")).unwrap_err();
            assert!(err.contains(want), "{rule:?}: {err}");
        }
        let twice = "[[ratelimit.rules]]\nkey_prefix = \"a:\"\nrate_per_s = 1\nburst = 1\n";
        assert!(load(&twice.repeat(2)).unwrap_err().contains("twice"));
    }
}
