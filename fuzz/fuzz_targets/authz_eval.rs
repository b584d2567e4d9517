//! Fuzz target: the permission evaluator (`subzero::authz::check`) against the naive
//! reference evaluator of the property test (`subzero::authz::reference`), on small worlds
//! (schema, tuples with cycles, wildcards, usersets, expiries, deletes) drawn from the input.
//! Every check of every world must give the reference's answer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Bytes choose the world one draw at a time; splitmix continues past their end.
    if let Err(why) = subzero::authz::reference::run_world(0x5eed, data) {
        panic!("evaluator and reference disagree: {why}");
    }
});
