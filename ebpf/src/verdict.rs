//! Verdict: blocklist first, then the per-source token buckets.

use subzero_common::{gcra_admit, RateEntry, RateKey, Reason};

use crate::{
    maps::{block_v4, block_v6, params, SZ_RATE},
    parse::{Src, L4},
};

/// Drops the packet when an unexpired blocklist entry covers `src`; bumps that entry's drop count.
#[inline(always)]
pub fn blocked(src: Src, now_ns: u64) -> bool {
    let entry = match src {
        Src::V4(a) => block_v4(a),
        Src::V6(a) => block_v6(a),
    };
    let Some(entry) = entry else {
        return false;
    };
    // SAFETY: the pointer comes from a successful map lookup and stays valid for this run;
    // concurrent updates only make the drop count approximate.
    unsafe {
        if !(*entry).is_active(now_ns) {
            return false;
        }
        (*entry).drops = (*entry).drops.wrapping_add(1);
    }
    true
}

/// Applies the packet bucket to every packet and the SYN bucket to new TCP connections.
/// Returns whether the packet is over the limit.
#[inline(always)]
pub fn rate_limited(src: Src, l4: L4, now_ns: u64) -> bool {
    let p = params();
    if p.pkt_interval_ns == 0 && p.syn_interval_ns == 0 {
        return false;
    }
    let key = match src {
        Src::V4(a) => RateKey::v4(a),
        // One bucket per /64: a single IPv6 host usually owns the whole prefix and could
        // otherwise rotate through it to get a fresh bucket per address.
        Src::V6(a) => RateKey::v6([
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], 0, 0, 0, 0, 0, 0, 0, 0,
        ]),
    };
    let is_syn = l4 == L4::Syn;
    let Some(entry) = SZ_RATE.get_ptr_mut(&key) else {
        // First packet from this source: a fresh bucket always admits it.
        let fresh = RateEntry {
            syn_tat_ns: if is_syn {
                now_ns + p.syn_interval_ns
            } else {
                0
            },
            pkt_tat_ns: now_ns + p.pkt_interval_ns,
            drops: 0,
            last_ns: now_ns,
        };
        // A failed insert (map full of locked entries) only means we do not track this source.
        let _ = SZ_RATE.insert(&key, &fresh, 0);
        return false;
    };
    // SAFETY: pointer from a successful lookup; races between CPUs only blur the bucket.
    unsafe {
        (*entry).last_ns = now_ns;
        let Some(pkt_tat) = gcra_admit(
            (*entry).pkt_tat_ns,
            now_ns,
            p.pkt_interval_ns,
            p.pkt_limit_ns,
        ) else {
            (*entry).drops = (*entry).drops.wrapping_add(1);
            return true;
        };
        if is_syn {
            let Some(syn_tat) = gcra_admit(
                (*entry).syn_tat_ns,
                now_ns,
                p.syn_interval_ns,
                p.syn_limit_ns,
            ) else {
                (*entry).drops = (*entry).drops.wrapping_add(1);
                return true;
            };
            (*entry).syn_tat_ns = syn_tat;
        }
        (*entry).pkt_tat_ns = pkt_tat;
    }
    false
}

/// The full decision for a parsed IP packet.
#[inline(always)]
pub fn decide(src: Src, l4: L4, now_ns: u64) -> Reason {
    if blocked(src, now_ns) {
        return Reason::DropBlock;
    }
    if rate_limited(src, l4, now_ns) {
        return Reason::DropRate;
    }
    if l4 == L4::Truncated {
        return Reason::PassMalformed;
    }
    Reason::Pass
}
