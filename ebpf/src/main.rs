//! XDP gate: drops blocklisted and rate-limited sources before they cost a syscall; plus a socket-filter twin.
//!
//! Split by concern: [`parse`] reads headers, [`maps`] defines the maps shared with userspace,
//! [`verdict`] decides. Unparseable frames are always passed (and counted), never dropped.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod verdict;

use aya_ebpf::{
    bindings::{bpf_hdr_start_off::BPF_HDR_START_NET, xdp_action},
    helpers::{bpf_ktime_get_boot_ns, bpf_skb_load_bytes_relative},
    macros::{socket_filter, xdp},
    programs::{SkBuffContext, XdpContext},
};
use subzero_common::Reason;

use crate::parse::{Frame, Src};

/// XDP entry point: parse, decide, count, act.
#[xdp]
pub fn gate(ctx: XdpContext) -> u32 {
    let reason = match try_gate(&ctx) {
        Ok(reason) => reason,
        Err(reason) => reason,
    };
    maps::count(reason);
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn try_gate(ctx: &XdpContext) -> Result<Reason, Reason> {
    let (src, l4) = match parse::parse(ctx) {
        Frame::NotIp => return Ok(Reason::Pass),
        Frame::Malformed => return Err(Reason::PassMalformed),
        Frame::Ip { src, l4 } => (src, l4),
    };
    // SAFETY: helper without preconditions.
    let now_ns = unsafe { bpf_ktime_get_boot_ns() };
    Ok(verdict::decide(src, l4, now_ns))
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// Socket-filter entry point for the listeners, used where XDP cannot attach: the blocklist only.
///
/// Returns the number of bytes to keep: 0 drops the packet, the full length keeps it.
#[socket_filter]
pub fn gate_sock(ctx: SkBuffContext) -> i64 {
    let reason = try_gate_sock(&ctx);
    maps::count(reason);
    if reason.is_drop() {
        0
    } else {
        i64::from(ctx.len())
    }
}

#[inline(always)]
fn load_net<const N: usize>(ctx: &SkBuffContext, offset: u32) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: the helper writes at most N bytes into `buf` and reports failure by a negative value.
    let ret = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb as *const _,
            offset,
            buf.as_mut_ptr().cast(),
            N as u32,
            BPF_HDR_START_NET,
        )
    };
    if ret < 0 {
        None
    } else {
        Some(buf)
    }
}

#[inline(always)]
fn try_gate_sock(ctx: &SkBuffContext) -> Reason {
    // `protocol` holds the big-endian EtherType in the low 16 bits.
    let proto = u16::from_be(ctx.skb.protocol() as u16);
    let src = match proto {
        ETH_P_IP => match load_net::<20>(ctx, 0) {
            Some(h) if h[0] >> 4 == 4 => Src::V4([h[12], h[13], h[14], h[15]]),
            _ => return Reason::PassMalformed,
        },
        ETH_P_IPV6 => match load_net::<40>(ctx, 0) {
            Some(h) if h[0] >> 4 == 6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&h[8..24]);
                Src::V6(a)
            }
            _ => return Reason::PassMalformed,
        },
        _ => return Reason::Pass,
    };
    // SAFETY: helper without preconditions.
    let now_ns = unsafe { bpf_ktime_get_boot_ns() };
    if verdict::blocked(src, now_ns) {
        return Reason::DropBlock;
    }
    Reason::Pass
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
