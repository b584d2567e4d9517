//! Duplicate member names in JWS headers and JWT claims sets: refused at any depth.
//!
//! RFC 7515 §5.2 and RFC 7519 §7.2 let a parser either reject duplicate names or keep the
//! last; serde keeps neither rule for names a struct does not list (ignored, so two `typ` or
//! two `act.sub` pass unnoticed) and refuses repeats of the names it does list. Two readers of
//! one token (ours and a backend that re-reads the claims) must never see different values,
//! so any repeat, escaped or not (`"a"` and `"\u0061"` are one name), is refused.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The error the walk stops with at the first repeated name.
const REPEATED: &str = "repeated member name";

/// Whether some object in `json` repeats a member name (found before any syntax error). Other
/// faults (not JSON, too deep: serde_json's recursion limit is 128) are left to the typed parse
/// that follows, so they keep their own error.
pub(crate) fn repeats_a_name(json: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(json);
    Walk.deserialize(&mut de)
        .is_err_and(|e| e.to_string().starts_with(REPEATED))
}

/// Walks one value, checking each object's names.
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut names = BTreeSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !names.insert(name) {
                return Err(serde::de::Error::custom(REPEATED));
            }
            map.next_value_seed(Walk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::repeats_a_name;

    #[test]
    fn repeats_are_found_at_any_depth_and_through_escapes() {
        assert!(!repeats_a_name(
            br#"{"a":1,"b":{"a":[{"a":1,"b":2}]},"c":[1,"x",null,true]}"#
        ));
        assert!(repeats_a_name(br#"{"a":1,"a":1}"#));
        assert!(repeats_a_name(br#"{"a":1,"\u0061":2}"#));
        assert!(repeats_a_name(br#"{"act":{"sub":"x","sub":"y"}}"#));
        assert!(repeats_a_name(br#"{"l":[{"k":1,"k":2}]}"#));
        assert!(
            !repeats_a_name(br#"{"a":1,"#),
            "a syntax error is not a repeat"
        );
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(
            !repeats_a_name(deep.as_bytes()),
            "nesting is bounded, not a repeat"
        );
    }
}
