//! Fuzz target: the SpiceDB-schema parser and validator (`subzero::authz::Schema::parse`) on
//! any text; an accepted schema must answer every lookup for the names it interned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use subzero::authz::Schema;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(schema) = Schema::parse("fuzz.zed", text) else {
        return;
    };
    let _ = schema.fingerprint();
    let names: Vec<String> = schema.type_names().map(str::to_owned).collect();
    for name in &names {
        let ty = schema.type_id(name).expect("an interned type resolves");
        assert_eq!(schema.type_name(ty), name);
        for &rel in schema.rels_of(ty) {
            assert_eq!(schema.rel_owner(rel), ty);
            let rel_name = schema.rel_name(rel).to_owned();
            assert_eq!(schema.rel_id(ty, &rel_name), Some(rel));
        }
    }
    // Parsing is deterministic: the same text gives the same schema.
    let again = Schema::parse("fuzz.zed", text).expect("parsed once, parses again");
    assert_eq!(again.fingerprint(), schema.fingerprint());
});
