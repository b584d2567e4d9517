//! The per-pass budget for costly work (signature verification, signing): how much one loop
//! pass of a shard may spend before the rest waits for the next pass.
//!
//! Decision code: takes the pass number, does no I/O.

/// Costly work allowed per pass, in units of one strict Ed25519 verification (about 40 µs
/// here): other connections wait at most about this long for their cheap requests.
pub const VERIFY_UNITS_PER_PASS: u32 = 16;

/// What is left of this pass's budget.
#[derive(Debug)]
pub struct PassBudget {
    pass: u64,
    left: u32,
    per_pass: u32,
}

impl PassBudget {
    /// `per_pass` units every pass.
    pub fn new(per_pass: u32) -> PassBudget {
        assert!(per_pass > 0);
        PassBudget {
            pass: 0,
            left: per_pass,
            per_pass,
        }
    }

    /// Takes `units` in `pass`. The first costly work of a pass always proceeds (whatever its
    /// size, so nothing starves); after that, work goes ahead only while units are left.
    pub fn take(&mut self, pass: u64, units: u32) -> bool {
        if pass != self.pass {
            self.pass = pass;
            self.left = self.per_pass;
        }
        if self.left == self.per_pass || units <= self.left {
            self.left = self.left.saturating_sub(units.max(1));
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_spends_its_units_then_waits_for_the_next() {
        let mut b = PassBudget::new(4);
        assert!(b.take(1, 1) && b.take(1, 2));
        assert!(!b.take(1, 2), "one unit left, two asked");
        assert!(b.take(1, 1));
        assert!(!b.take(1, 1));
        assert!(b.take(2, 4) && !b.take(2, 1));
    }

    #[test]
    fn the_first_work_of_a_pass_always_proceeds() {
        let mut b = PassBudget::new(4);
        assert!(b.take(7, 100), "oversized, but first in its pass");
        assert!(!b.take(7, 1));
        assert!(b.take(8, 1));
    }
}
