//! Property test: the evaluator against the naive reference evaluator (`reference.rs`) on
//! random small schemas and random tuple graphs.

use proptest::prelude::*;

use super::reference::run_world;

/// Guards against a vacuous property: the generated worlds must produce every outcome.
#[test]
fn random_worlds_produce_every_outcome() {
    let mut total = [0; 3];
    for seed in 0..64 {
        let outcomes = run_world(seed, &[]).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        for (t, o) in total.iter_mut().zip(outcomes) {
            *t += o;
        }
    }
    let [allowed, denied, depth] = total;
    assert!(allowed * 20 > allowed + denied, "{total:?}");
    assert!(denied * 5 > allowed + denied, "{total:?}");
    assert!(depth > 0, "{total:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluator_matches_reference(seed in any::<u64>()) {
        run_world(seed, &[]).map_err(TestCaseError::fail)?;
    }
}
