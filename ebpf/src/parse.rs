//! Header parsing with verifier-friendly bounds checks: Ethernet, up to two VLAN tags, IPv4/IPv6, TCP flags.
//!
//! Every read goes through [`read`], which checks `offset + size <= data_end` right before the
//! load so the verifier can prove the access. Offsets are bounded by construction (at most two
//! 4-byte tags, IHL masked to 4 bits), which keeps the verifier's range tracking simple.

use aya_ebpf::programs::XdpContext;

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPV6_HDR_LEN: usize = 40;
pub const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// Source address of a parsed packet, network byte order.
#[derive(Clone, Copy)]
pub enum Src {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What the parser learned about one frame.
pub enum Frame {
    /// Not IPv4/IPv6 (ARP, LLDP, ...): out of scope, passed.
    NotIp,
    /// Could not be parsed: passed and counted as malformed.
    Malformed,
    /// An IP packet. `l4` says whether the TCP header (if any) could be read.
    Ip { src: Src, l4: L4 },
}

/// Transport-layer facts the verdict needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// A TCP SYN without ACK: a new connection attempt.
    Syn,
    /// Anything else that parsed (other TCP, UDP, ICMP, later fragments).
    Other,
    /// The IP header said TCP but the TCP header is cut short.
    Truncated,
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked above against data_end; packet memory may be unaligned.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// Parses one frame from the XDP context.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Frame {
    let Some(mut ether_type) = read_be16(ctx, 12) else {
        return Frame::Malformed;
    };
    let mut l3 = ETH_HDR_LEN;
    // Two tags cover 802.1Q and QinQ (802.1ad outer + 802.1Q inner); written out, not looped,
    // so the verifier sees two straight-line steps.
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let Some(inner) = read_be16(ctx, l3 + 2) else {
            return Frame::Malformed;
        };
        ether_type = inner;
        l3 += VLAN_HDR_LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            let Some(inner) = read_be16(ctx, l3 + 2) else {
                return Frame::Malformed;
            };
            ether_type = inner;
            l3 += VLAN_HDR_LEN;
        }
    }
    match ether_type {
        ETH_P_IP => parse_v4(ctx, l3),
        ETH_P_IPV6 => parse_v6(ctx, l3),
        ETH_P_8021Q | ETH_P_8021AD => Frame::Malformed, // a third tag: beyond what we parse
        _ => Frame::NotIp,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Frame {
    let Some(hdr) = read::<[u8; 20]>(ctx, l3) else {
        return Frame::Malformed;
    };
    let version = hdr[0] >> 4;
    let ihl = (hdr[0] & 0x0f) as usize;
    if version != 4 || ihl < 5 {
        return Frame::Malformed;
    }
    let src = Src::V4([hdr[12], hdr[13], hdr[14], hdr[15]]);
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    if hdr[9] != IPPROTO_TCP || frag_offset != 0 {
        return Frame::Ip { src, l4: L4::Other };
    }
    Frame::Ip {
        src,
        l4: tcp_flags(ctx, l3 + ihl * 4),
    }
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Frame {
    let Some(hdr) = read::<[u8; IPV6_HDR_LEN]>(ctx, l3) else {
        return Frame::Malformed;
    };
    if hdr[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    let src = Src::V6(src);
    // Extension headers are not walked: such packets get the packet bucket but not the SYN one.
    if hdr[6] != IPPROTO_TCP {
        return Frame::Ip { src, l4: L4::Other };
    }
    Frame::Ip {
        src,
        l4: tcp_flags(ctx, l3 + IPV6_HDR_LEN),
    }
}

#[inline(always)]
fn tcp_flags(ctx: &XdpContext, l4: usize) -> L4 {
    // Flags are byte 13; require the whole 20-byte fixed header.
    match read::<[u8; 20]>(ctx, l4) {
        None => L4::Truncated,
        Some(tcp) if tcp[13] & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN => L4::Syn,
        Some(_) => L4::Other,
    }
}
