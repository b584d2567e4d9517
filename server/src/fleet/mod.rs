//! The fleet: several gateways acting as one through Redis (issue 13).

pub mod lease;
