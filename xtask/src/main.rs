//! xtask: bootstrap, test, run and bench tooling that cargo alone cannot do.
fn main() {}
