//! Map definitions of the gate, sized by the named constants in `subzero-common`.
//!
//! The maps are not pinned by the object itself: the loader pins them under
//! `/sys/fs/bpf/subzero/` after it has restored state, so a half-initialised map is never visible.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
};
use subzero_common::{
    BlockEntry, GateParams, RateEntry, RateKey, Reason, MAX_BLOCK_V4_ENTRIES, MAX_BLOCK_V6_ENTRIES,
    MAX_CONFIG_ENTRIES, MAX_RATE_ENTRIES, N_REASONS,
};

#[map]
pub static SZ_BLOCK_V4: LpmTrie<[u8; 4], BlockEntry> =
    LpmTrie::with_max_entries(MAX_BLOCK_V4_ENTRIES, 0);

#[map]
pub static SZ_BLOCK_V6: LpmTrie<[u8; 16], BlockEntry> =
    LpmTrie::with_max_entries(MAX_BLOCK_V6_ENTRIES, 0);

#[map]
pub static SZ_RATE: LruHashMap<RateKey, RateEntry> =
    LruHashMap::with_max_entries(MAX_RATE_ENTRIES, 0);

#[map]
pub static SZ_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(N_REASONS, 0);

#[map]
pub static SZ_CONFIG: Array<GateParams> = Array::with_max_entries(MAX_CONFIG_ENTRIES, 0);

/// Adds one to this CPU's counter for `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(p) = SZ_COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p = (*p).wrapping_add(1) };
    }
}

/// The rate parameters, or all-disabled if userspace has not written them yet.
#[inline(always)]
pub fn params() -> GateParams {
    match SZ_CONFIG.get(0) {
        Some(p) => *p,
        None => GateParams {
            syn_interval_ns: 0,
            syn_limit_ns: 0,
            pkt_interval_ns: 0,
            pkt_limit_ns: 0,
        },
    }
}

/// Longest-prefix blocklist match for an IPv4 source, as a mutable pointer (for the drop count).
#[inline(always)]
pub fn block_v4(addr: [u8; 4]) -> Option<*mut BlockEntry> {
    SZ_BLOCK_V4
        .get(Key::new(32, addr))
        .map(|e| (e as *const BlockEntry).cast_mut())
}

/// Longest-prefix blocklist match for an IPv6 source.
#[inline(always)]
pub fn block_v6(addr: [u8; 16]) -> Option<*mut BlockEntry> {
    SZ_BLOCK_V6
        .get(Key::new(128, addr))
        .map(|e| (e as *const BlockEntry).cast_mut())
}
