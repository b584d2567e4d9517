//! Types shared by the XDP gate (kernel) and the server (userspace): map names, sizes, layouts, reason codes.
//!
//! This is the only crate built for both the BPF target and the host, so the kernel program and
//! the loader cannot disagree on a map's name, size or value layout. Everything here is
//! `#[repr(C)]`, `Copy`, and free of padding the compiler could fill differently on each side
//! (explicit `pad` fields instead).
#![no_std]

/// Directory under bpffs where the gate pins its maps.
pub const PIN_DIR: &str = "/sys/fs/bpf/subzero";
/// Where bpffs is mounted when the gate has to mount it itself.
pub const BPFFS_DIR: &str = "/sys/fs/bpf";

/// LPM trie: IPv4 CIDR → [`BlockEntry`].
pub const MAP_BLOCK_V4: &str = "SZ_BLOCK_V4";
/// LPM trie: IPv6 CIDR → [`BlockEntry`].
pub const MAP_BLOCK_V6: &str = "SZ_BLOCK_V6";
/// LRU hash: source address ([`RateKey`]) → [`RateEntry`].
pub const MAP_RATE: &str = "SZ_RATE";
/// Per-CPU array indexed by [`Reason`]: packet counts.
pub const MAP_COUNTERS: &str = "SZ_COUNTERS";
/// Array with one [`GateParams`] at index 0, written by userspace.
pub const MAP_CONFIG: &str = "SZ_CONFIG";
/// Every map the gate pins, in a stable order.
pub const MAP_NAMES: [&str; 5] = [
    MAP_BLOCK_V4,
    MAP_BLOCK_V6,
    MAP_RATE,
    MAP_COUNTERS,
    MAP_CONFIG,
];

/// Name of the XDP program in the object.
pub const PROG_XDP: &str = "gate";
/// Name of the socket-filter program in the object.
pub const PROG_SOCKET: &str = "gate_sock";

/// Maximum IPv4 blocklist entries.
pub const MAX_BLOCK_V4_ENTRIES: u32 = 65_536;
/// Maximum IPv6 blocklist entries.
pub const MAX_BLOCK_V6_ENTRIES: u32 = 65_536;
/// Maximum tracked sources in the rate map (LRU: the least recently seen are evicted).
pub const MAX_RATE_ENTRIES: u32 = 131_072;
/// Number of configuration slots (only index 0 is used).
pub const MAX_CONFIG_ENTRIES: u32 = 1;

/// Why the gate passed or dropped a packet; the index into `SZ_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Parsed and allowed (non-IP frames such as ARP are passed and counted here too).
    Pass = 0,
    /// Source matched an unexpired blocklist entry.
    DropBlock = 1,
    /// Source exceeded its SYN or packet token bucket.
    DropRate = 2,
    /// Frame could not be parsed (truncated, too many VLAN tags, bad IHL): passed, never dropped.
    PassMalformed = 3,
}

/// Number of [`Reason`] values; the size of `SZ_COUNTERS`. Follows the enum through
/// [`Reason::LAST`]; the assertions below check that the indexes are exactly `0..N_REASONS`.
pub const N_REASONS: u32 = Reason::LAST as u32 + 1;

impl Reason {
    /// The reason with the highest counter index. A new variant goes after it and becomes the
    /// new `LAST` (`as_str`'s exhaustive match will not compile until it names the variant).
    pub const LAST: Reason = Reason::PassMalformed;

    /// Every reason in counter-index order.
    pub const ALL: [Reason; N_REASONS as usize] = [
        Reason::Pass,
        Reason::DropBlock,
        Reason::DropRate,
        Reason::PassMalformed,
    ];

    /// The label used in metrics and the stats CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Pass => "pass",
            Reason::DropBlock => "drop_block",
            Reason::DropRate => "drop_rate",
            Reason::PassMalformed => "pass_malformed",
        }
    }

    /// Whether packets with this reason were dropped.
    pub const fn is_drop(self) -> bool {
        matches!(self, Reason::DropBlock | Reason::DropRate)
    }
}

// The counter array has one slot per reason, indexed by the discriminant: `ALL` lists them in
// index order from 0 with no gap, so every index below `N_REASONS` is a reason and every reason
// is an index below it. Checked at compile time, for the BPF target too.
const _: () = {
    let mut idx = 0;
    while idx < Reason::ALL.len() {
        assert!(Reason::ALL[idx] as usize == idx);
        idx += 1;
    }
    assert!(Reason::ALL.len() == N_REASONS as usize);
};

/// Why a CIDR is on the blocklist (stored in [`BlockEntry::reason`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// Added by an operator (`subzero block add`).
    Manual = 1,
    /// Flagged by the threat checks.
    Threat = 2,
    /// Repeat rate-limit offender.
    RateLimit = 3,
    /// Restored from a previous run with an unknown code.
    Other = 255,
}

impl BlockReason {
    /// Every named reason.
    pub const ALL: [BlockReason; 4] = [
        BlockReason::Manual,
        BlockReason::Threat,
        BlockReason::RateLimit,
        BlockReason::Other,
    ];

    /// The label used by the CLI and in `blocklist.json`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BlockReason::Manual => "manual",
            BlockReason::Threat => "threat",
            BlockReason::RateLimit => "ratelimit",
            BlockReason::Other => "other",
        }
    }

    /// Decodes a stored code; unknown codes become [`BlockReason::Other`].
    pub const fn from_code(code: u32) -> BlockReason {
        match code {
            1 => BlockReason::Manual,
            2 => BlockReason::Threat,
            3 => BlockReason::RateLimit,
            _ => BlockReason::Other,
        }
    }
}

/// Value of `SZ_BLOCK_V4` / `SZ_BLOCK_V6`.
///
/// Keys are `{prefix_len: u32, addr: [u8; 4 or 16]}` in network byte order (the LPM trie key
/// layout); the address bytes are the CIDR's network address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockEntry {
    /// `CLOCK_BOOTTIME` nanoseconds after which the entry no longer blocks; 0 = forever.
    pub until_ns: u64,
    /// A [`BlockReason`] code.
    pub reason: u32,
    /// Explicit padding so both sides agree on the layout.
    pub pad: u32,
    /// Packets dropped by this entry (approximate under concurrency; for "top offenders").
    pub drops: u64,
}

// Map ABI, checked at compile time on both targets: two u64, two u32 (`pad` is explicit).
const _: () = assert!(core::mem::size_of::<BlockEntry>() == 24);
const _: () = assert!(core::mem::align_of::<BlockEntry>() == 8);

impl BlockEntry {
    /// Whether the entry still blocks at `now_ns` (`CLOCK_BOOTTIME`).
    #[inline]
    pub const fn is_active(&self, now_ns: u64) -> bool {
        self.until_ns == 0 || now_ns < self.until_ns
    }
}

/// Key of `SZ_RATE`: the source address, IPv4 as v4-mapped IPv6 (`::ffff:a.b.c.d`), IPv6 as
/// its /64 prefix (low 64 bits zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct RateKey {
    /// Network byte order.
    pub addr: [u8; 16],
}

// Map ABI, checked at compile time on both targets: the address bytes.
const _: () = assert!(core::mem::size_of::<RateKey>() == 16);
const _: () = assert!(core::mem::align_of::<RateKey>() == 1);

impl RateKey {
    /// The v4-mapped key for an IPv4 source.
    #[inline]
    pub const fn v4(a: [u8; 4]) -> RateKey {
        RateKey {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }

    /// The key for an IPv6 source.
    #[inline]
    pub const fn v6(addr: [u8; 16]) -> RateKey {
        RateKey { addr }
    }
}

/// Value of `SZ_RATE`: two GCRA buckets (theoretical arrival times) and a drop count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateEntry {
    /// Theoretical arrival time of the next SYN (`CLOCK_BOOTTIME` ns).
    pub syn_tat_ns: u64,
    /// Theoretical arrival time of the next packet (`CLOCK_BOOTTIME` ns).
    pub pkt_tat_ns: u64,
    /// Packets dropped for this source (approximate under concurrency).
    pub drops: u64,
    /// Last time a packet from this source was seen.
    pub last_ns: u64,
}

// Map ABI, checked at compile time on both targets: four u64.
const _: () = assert!(core::mem::size_of::<RateEntry>() == 32);
const _: () = assert!(core::mem::align_of::<RateEntry>() == 8);

/// Value of `SZ_CONFIG[0]`: rate parameters precomputed by userspace so the kernel side does
/// no division.
///
/// A bucket with `interval_ns == 0` is disabled (everything passes it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateParams {
    /// Nanoseconds per SYN token (`1e9 / syn_rate_per_s`).
    pub syn_interval_ns: u64,
    /// Burst allowance: `syn_interval_ns × syn_burst`.
    pub syn_limit_ns: u64,
    /// Nanoseconds per packet token (`1e9 / pkt_rate_per_s`).
    pub pkt_interval_ns: u64,
    /// Burst allowance: `pkt_interval_ns × pkt_burst`.
    pub pkt_limit_ns: u64,
}

// Map ABI, checked at compile time on both targets: four u64.
const _: () = assert!(core::mem::size_of::<GateParams>() == 32);
const _: () = assert!(core::mem::align_of::<GateParams>() == 8);

impl GateParams {
    /// Parameters for the given rates and bursts; a rate or burst of 0 disables that bucket.
    pub const fn from_rates(
        syn_rate_per_s: u32,
        syn_burst: u32,
        pkt_rate_per_s: u32,
        pkt_burst: u32,
    ) -> GateParams {
        let (syn_interval_ns, syn_limit_ns) = bucket(syn_rate_per_s, syn_burst);
        let (pkt_interval_ns, pkt_limit_ns) = bucket(pkt_rate_per_s, pkt_burst);
        GateParams {
            syn_interval_ns,
            syn_limit_ns,
            pkt_interval_ns,
            pkt_limit_ns,
        }
    }
}

const fn bucket(rate_per_s: u32, burst: u32) -> (u64, u64) {
    if rate_per_s == 0 || burst == 0 {
        return (0, 0);
    }
    let interval_ns = 1_000_000_000 / rate_per_s as u64;
    // A rate above 1e9/s rounds to 1 ns per token; never 0, which would mean "disabled".
    let interval_ns = if interval_ns == 0 { 1 } else { interval_ns };
    (interval_ns, interval_ns * burst as u64)
}

/// GCRA admission (the "virtual scheduling" form of a token bucket).
///
/// `tat_ns` is the bucket's theoretical arrival time. Returns the new TAT when the packet
/// conforms, or `None` when it must be dropped (the TAT is then left unchanged). A fresh bucket
/// admits `limit_ns / interval_ns` packets back to back and then one per `interval_ns`.
/// `interval_ns == 0` disables the bucket.
#[inline]
pub const fn gcra_admit(tat_ns: u64, now_ns: u64, interval_ns: u64, limit_ns: u64) -> Option<u64> {
    if interval_ns == 0 {
        return Some(tat_ns);
    }
    let start = if tat_ns > now_ns { tat_ns } else { now_ns };
    let new_tat = start.saturating_add(interval_ns);
    if new_tat - now_ns > limit_ns {
        None
    } else {
        Some(new_tat)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, two u64 and two u32 with no implicit padding (the `pad`
    // field is explicit), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::BlockEntry {}
    // SAFETY: `#[repr(C)]`, `Copy`, one byte array: every bit pattern is a valid value.
    unsafe impl aya::Pod for super::RateKey {}
    // SAFETY: `#[repr(C)]`, `Copy`, four u64 and no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::RateEntry {}
    // SAFETY: `#[repr(C)]`, `Copy`, four u64 and no padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::GateParams {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_burst_then_drops_then_refills() {
        let p = GateParams::from_rates(10, 3, 0, 0);
        assert_eq!(p.syn_interval_ns, 100_000_000);
        let now = 5_000_000_000;
        let mut tat = 0;
        for _ in 0..3 {
            tat = gcra_admit(tat, now, p.syn_interval_ns, p.syn_limit_ns).expect("within burst");
        }
        assert_eq!(
            gcra_admit(tat, now, p.syn_interval_ns, p.syn_limit_ns),
            None
        );
        // One interval later exactly one more conforms.
        let later = now + p.syn_interval_ns;
        let tat2 = gcra_admit(tat, later, p.syn_interval_ns, p.syn_limit_ns).expect("refilled");
        assert_eq!(
            gcra_admit(tat2, later, p.syn_interval_ns, p.syn_limit_ns),
            None
        );
    }

    #[test]
    fn gcra_disabled_bucket_admits_everything() {
        let p = GateParams::from_rates(0, 10, 100, 0);
        assert_eq!(p, GateParams::default());
        for i in 0..1000 {
            assert!(gcra_admit(0, i, p.pkt_interval_ns, p.pkt_limit_ns).is_some());
        }
    }

    #[test]
    fn block_entry_expiry() {
        let forever = BlockEntry {
            until_ns: 0,
            ..BlockEntry::default()
        };
        assert!(forever.is_active(u64::MAX));
        let e = BlockEntry {
            until_ns: 100,
            ..BlockEntry::default()
        };
        assert!(e.is_active(99));
        assert!(!e.is_active(100));
    }

    // Sizes and alignments are `const` assertions beside each type.
    #[test]
    fn rate_key_maps_v4_into_v6() {
        assert_eq!(
            RateKey::v4([10, 0, 0, 1]).addr[10..],
            [0xff, 0xff, 10, 0, 0, 1]
        );
    }
}
