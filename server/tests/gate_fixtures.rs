//! Fixture tests for the XDP gate and its socket-filter twin: crafted frames through `BPF_PROG_TEST_RUN`, no NIC.
//!
//! Each test loads a private, unpinned copy of the programs and maps, so the tests run in
//! parallel and next to a live server. Needs root (`CAP_BPF`): with `CI=true` a missing
//! privilege fails the test; otherwise it is skipped with a printed reason.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use subzero::gate::harness::{GateHarness, XDP_DROP, XDP_PASS};
use subzero::gate::{boot_ns, BlockReason, Cidr, Reason};

// ---- privilege gate -------------------------------------------------------------------------

fn harness() -> Option<GateHarness> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !root {
        assert!(
            !ci,
            "CI=true but not root: the eBPF fixture tests must run in CI"
        );
        eprintln!("skipping: eBPF fixture tests need root (CAP_BPF)");
        return None;
    }
    match GateHarness::load() {
        Ok(h) => Some(h),
        Err(e) => panic!("root but the gate object did not load: {e}"),
    }
}

// ---- frame builders -------------------------------------------------------------------------

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn eth(tags: &[u16], ether_type: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    for &tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x64]); // VLAN 100
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn tcp(flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    t[2..4].copy_from_slice(&8080u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t
}

fn udp() -> Vec<u8> {
    let mut u = vec![0u8; 8 + 16];
    u[0..2].copy_from_slice(&40_000u16.to_be_bytes());
    u[2..4].copy_from_slice(&53u16.to_be_bytes());
    u[4..6].copy_from_slice(&24u16.to_be_bytes());
    u
}

fn ipv4_opts(src: Ipv4Addr, proto: u8, n_opt_words: usize, l4: &[u8]) -> Vec<u8> {
    let hdr_len = 20 + 4 * n_opt_words;
    let mut h = vec![0u8; hdr_len];
    h[0] = 0x40 | (hdr_len / 4) as u8;
    h[2..4].copy_from_slice(&((hdr_len + l4.len()) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&[10, 99, 0, 1]);
    h.extend_from_slice(l4);
    h
}

fn ipv4(src: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    ipv4_opts(src, proto, 0, l4)
}

fn ipv6(src: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&"2001:db8:99::1".parse::<Ipv6Addr>().unwrap().octets());
    h.extend_from_slice(l4);
    h
}

fn frame_v4(src: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(src.parse().unwrap(), proto, l4));
    f
}

fn frame_v6(src: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(&[], 0x86DD);
    f.extend(ipv6(src.parse().unwrap(), proto, l4));
    f
}

fn syn_v4(src: &str) -> Vec<u8> {
    frame_v4(src, TCP, &tcp(SYN))
}

// ---- helpers --------------------------------------------------------------------------------

/// Runs `frame` and asserts the XDP action and that exactly `reason`'s counter went up by one.
fn expect(h: &mut GateHarness, frame: &[u8], action: u32, reason: Reason, what: &str) {
    let before = h.counters().unwrap();
    let got = h.run_xdp(frame).unwrap();
    let after = h.counters().unwrap();
    assert_eq!(got, action, "{what}: wrong XDP action");
    for r in Reason::ALL {
        let delta = after[r as usize] - before[r as usize];
        let want = u64::from(r == reason);
        assert_eq!(
            delta,
            want,
            "{what}: counter {} moved by {delta}, expected {want}",
            r.as_str()
        );
    }
}

/// Runs `frame` once and returns the reason it was counted under, after checking that exactly
/// one counter moved, by one, and that the XDP action agrees with it.
fn run(h: &mut GateHarness, frame: &[u8], what: &str) -> Reason {
    let before = h.counters().unwrap();
    let got = h.run_xdp(frame).unwrap();
    let after = h.counters().unwrap();
    let moved: Vec<(Reason, u64)> = Reason::ALL
        .iter()
        .map(|&r| (r, after[r as usize] - before[r as usize]))
        .filter(|&(_, delta)| delta != 0)
        .collect();
    let [(reason, 1)] = moved[..] else {
        panic!("{what}: expected one counter to move by one, got {moved:?}");
    };
    let action = if reason.is_drop() { XDP_DROP } else { XDP_PASS };
    assert_eq!(
        got,
        action,
        "{what}: XDP action {got} for {}",
        reason.as_str()
    );
    reason
}

fn block(h: &mut GateHarness, cidr: &str) {
    h.maps
        .insert(cidr.parse::<Cidr>().unwrap(), BlockReason::Manual, 0)
        .unwrap();
}

// ---- parsing --------------------------------------------------------------------------------

#[test]
fn ipv4_ipv6_and_vlan_frames_are_parsed() {
    let Some(mut h) = harness() else { return };
    expect(
        &mut h,
        &syn_v4("198.51.100.7"),
        XDP_PASS,
        Reason::Pass,
        "plain IPv4 SYN",
    );
    expect(
        &mut h,
        &frame_v6("2001:db8:1::7", TCP, &tcp(SYN)),
        XDP_PASS,
        Reason::Pass,
        "plain IPv6 SYN",
    );
    // Block the sources and send them again behind 0, 1 and 2 VLAN tags: a drop proves the
    // parser found the source address behind the tags.
    block(&mut h, "198.51.100.7");
    block(&mut h, "2001:db8:1::7");
    for tags in [&[][..], &[0x8100], &[0x88A8, 0x8100], &[0x8100, 0x8100]] {
        let mut f = eth(tags, 0x0800);
        f.extend(ipv4("198.51.100.7".parse().unwrap(), UDP, &udp()));
        expect(
            &mut h,
            &f,
            XDP_DROP,
            Reason::DropBlock,
            &format!("IPv4 with tags {tags:x?}"),
        );
        let mut f = eth(tags, 0x86DD);
        f.extend(ipv6("2001:db8:1::7".parse().unwrap(), UDP, &udp()));
        expect(
            &mut h,
            &f,
            XDP_DROP,
            Reason::DropBlock,
            &format!("IPv6 with tags {tags:x?}"),
        );
    }
    // IPv4 options shift the TCP header; the source is still found.
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4_opts(
        "198.51.100.7".parse().unwrap(),
        TCP,
        2,
        &tcp(SYN),
    ));
    expect(&mut h, &f, XDP_DROP, Reason::DropBlock, "IPv4 with options");
}

#[test]
fn non_ip_frames_pass_and_are_counted() {
    let Some(mut h) = harness() else { return };
    // ARP request: 28-byte payload.
    let mut arp = eth(&[], 0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    expect(&mut h, &arp, XDP_PASS, Reason::Pass, "ARP");
    // ARP behind a VLAN tag.
    let mut arp = eth(&[0x8100], 0x0806);
    arp.extend_from_slice(&[0u8; 28]);
    expect(&mut h, &arp, XDP_PASS, Reason::Pass, "tagged ARP");
    // Even with everything blocked, non-IP is untouched.
    block(&mut h, "0.0.0.0/0");
    block(&mut h, "::/0");
    let mut lldp = eth(&[], 0x88CC);
    lldp.extend_from_slice(&[0u8; 40]);
    expect(
        &mut h,
        &lldp,
        XDP_PASS,
        Reason::Pass,
        "LLDP with a full blocklist",
    );
}

#[test]
fn truncated_and_unparseable_frames_pass_as_malformed() {
    let Some(mut h) = harness() else { return };
    // Block everything: a malformed frame must still pass.
    block(&mut h, "0.0.0.0/0");
    block(&mut h, "::/0");
    let full_v4 = syn_v4("203.0.113.9");
    // Ethernet header only, then IPv4 cut at 10 bytes (source address missing).
    expect(
        &mut h,
        &full_v4[..14],
        XDP_PASS,
        Reason::PassMalformed,
        "Ethernet only",
    );
    expect(
        &mut h,
        &full_v4[..24],
        XDP_PASS,
        Reason::PassMalformed,
        "IPv4 cut before the source",
    );
    let full_v6 = frame_v6("2001:db8::9", TCP, &tcp(SYN));
    expect(
        &mut h,
        &full_v6[..14 + 30],
        XDP_PASS,
        Reason::PassMalformed,
        "IPv6 cut inside the header",
    );
    // VLAN tag cut short.
    let tagged = eth(&[0x8100], 0x0800);
    expect(
        &mut h,
        &tagged[..16],
        XDP_PASS,
        Reason::PassMalformed,
        "VLAN tag cut short",
    );
    // Three tags: beyond what the parser reads.
    let mut f = eth(&[0x88A8, 0x8100, 0x8100], 0x0800);
    f.extend(ipv4("203.0.113.9".parse().unwrap(), UDP, &udp()));
    expect(
        &mut h,
        &f,
        XDP_PASS,
        Reason::PassMalformed,
        "three VLAN tags",
    );
    // Bad version / IHL.
    let mut f = syn_v4("203.0.113.9");
    f[14] = 0x45 ^ 0x70; // version 3
    expect(
        &mut h,
        &f,
        XDP_PASS,
        Reason::PassMalformed,
        "IPv4 version 3",
    );
    let mut f = syn_v4("203.0.113.9");
    f[14] = 0x44; // IHL 4
    expect(&mut h, &f, XDP_PASS, Reason::PassMalformed, "IPv4 IHL 4");
}

#[test]
fn truncated_tcp_header_is_malformed_but_blocklist_still_applies() {
    let Some(mut h) = harness() else { return };
    let f = frame_v4("192.0.2.50", TCP, &tcp(SYN)[..10]);
    expect(
        &mut h,
        &f,
        XDP_PASS,
        Reason::PassMalformed,
        "TCP header cut at 10 bytes",
    );
    block(&mut h, "192.0.2.50");
    expect(
        &mut h,
        &f,
        XDP_DROP,
        Reason::DropBlock,
        "blocked source with a cut TCP header",
    );
}

// ---- blocklist ------------------------------------------------------------------------------

#[test]
fn cidr_matches_at_several_prefix_lengths() {
    let Some(mut h) = harness() else { return };
    block(&mut h, "10.0.0.0/8");
    block(&mut h, "172.16.5.0/24");
    block(&mut h, "192.168.1.77/32");
    block(&mut h, "2001:db8:aaaa::/48");
    block(&mut h, "2001:db8:bbbb::1/128");
    for (src, blocked) in [
        ("10.0.0.1", true),
        ("10.255.255.254", true),
        ("11.0.0.1", false),
        ("172.16.5.200", true),
        ("172.16.6.1", false),
        ("192.168.1.77", true),
        ("192.168.1.78", false),
    ] {
        let (action, reason) = if blocked {
            (XDP_DROP, Reason::DropBlock)
        } else {
            (XDP_PASS, Reason::Pass)
        };
        expect(&mut h, &syn_v4(src), action, reason, src);
    }
    for (src, blocked) in [
        ("2001:db8:aaaa:1234::5", true),
        ("2001:db8:aaab::5", false),
        ("2001:db8:bbbb::1", true),
        ("2001:db8:bbbb::2", false),
    ] {
        let (action, reason) = if blocked {
            (XDP_DROP, Reason::DropBlock)
        } else {
            (XDP_PASS, Reason::Pass)
        };
        expect(&mut h, &frame_v6(src, TCP, &tcp(ACK)), action, reason, src);
    }
    // Drop counts land on the matching entry (top offenders).
    let entries = h.maps.entries().unwrap();
    let slash8 = entries
        .iter()
        .find(|b| b.cidr.to_string() == "10.0.0.0/8")
        .unwrap();
    assert_eq!(slash8.drops, 2);
    // Removal takes effect immediately.
    assert!(h.maps.remove("10.0.0.0/8".parse().unwrap()).unwrap());
    expect(
        &mut h,
        &syn_v4("10.0.0.1"),
        XDP_PASS,
        Reason::Pass,
        "after unblock",
    );
}

#[test]
fn expired_entries_pass_and_live_ttls_block() {
    let Some(mut h) = harness() else { return };
    let now = boot_ns();
    h.maps
        .insert(
            "198.18.0.0/16".parse().unwrap(),
            BlockReason::Threat,
            now - 1,
        )
        .unwrap();
    h.maps
        .insert(
            "198.19.0.0/16".parse().unwrap(),
            BlockReason::Threat,
            now + 60_000_000_000,
        )
        .unwrap();
    expect(
        &mut h,
        &syn_v4("198.18.1.1"),
        XDP_PASS,
        Reason::Pass,
        "expired entry",
    );
    expect(
        &mut h,
        &syn_v4("198.19.1.1"),
        XDP_DROP,
        Reason::DropBlock,
        "entry with 60 s left",
    );
    assert_eq!(h.maps.expire(boot_ns()).unwrap(), 1);
    assert_eq!(h.maps.entries().unwrap().len(), 1);
}

// ---- rate limiting --------------------------------------------------------------------------

#[test]
fn syn_bucket_drops_the_burst_plus_one_and_refills() {
    let Some(mut h) = harness() else { return };
    // 2 SYN/s (500 ms per token), burst 3; packet bucket off. The steps that must happen
    // "before the next token" get a whole token interval of scheduling slack.
    h.set_rates(2, 3, 0, 0).unwrap();
    let src = "100.64.0.9";
    for i in 0..3 {
        expect(
            &mut h,
            &syn_v4(src),
            XDP_PASS,
            Reason::Pass,
            &format!("SYN {i} within burst"),
        );
    }
    expect(
        &mut h,
        &syn_v4(src),
        XDP_DROP,
        Reason::DropRate,
        "SYN beyond burst",
    );
    // Non-SYN traffic from the same source is not limited by the SYN bucket.
    expect(
        &mut h,
        &frame_v4(src, TCP, &tcp(ACK)),
        XDP_PASS,
        Reason::Pass,
        "ACK",
    );
    expect(
        &mut h,
        &frame_v4(src, TCP, &tcp(SYN | ACK)),
        XDP_PASS,
        Reason::Pass,
        "SYN-ACK",
    );
    // Another source has its own bucket.
    expect(
        &mut h,
        &syn_v4("100.64.0.10"),
        XDP_PASS,
        Reason::Pass,
        "other source",
    );
    // One token comes back 500 ms after the first SYN. Retry until it has (each refused try
    // is one more counted drop), with a deadline far beyond the interval; then exactly one
    // SYN passes and the next is refused again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n_refused = 0u64;
    while run(&mut h, &syn_v4(src), "SYN waiting for the refill") == Reason::DropRate {
        n_refused += 1;
        assert!(
            Instant::now() < deadline,
            "no SYN token came back within 10 s at 2 SYN/s ({n_refused} refused)"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    expect(
        &mut h,
        &syn_v4(src),
        XDP_DROP,
        Reason::DropRate,
        "second SYN after one refill",
    );
    let offenders = h.maps.rate_offenders(10).unwrap();
    assert_eq!(offenders.len(), 1);
    assert_eq!(offenders[0].addr.to_string(), src);
    assert_eq!(
        offenders[0].drops,
        1 + n_refused + 1,
        "every refusal counted"
    );
}

#[test]
fn packet_bucket_limits_all_packets_per_source() {
    let Some(mut h) = harness() else { return };
    // 1 packet/s, burst 5: the sixth packet within the second is dropped.
    h.set_rates(0, 0, 1, 5).unwrap();
    let src = "2001:db8:77::1";
    for i in 0..5 {
        expect(
            &mut h,
            &frame_v6(src, UDP, &udp()),
            XDP_PASS,
            Reason::Pass,
            &format!("packet {i}"),
        );
    }
    expect(
        &mut h,
        &frame_v6(src, UDP, &udp()),
        XDP_DROP,
        Reason::DropRate,
        "packet 6",
    );
    // The bucket is per /64: another address in the same /64 shares it, another /64 does not.
    expect(
        &mut h,
        &frame_v6("2001:db8:77::2", UDP, &udp()),
        XDP_DROP,
        Reason::DropRate,
        "same /64",
    );
    expect(
        &mut h,
        &frame_v6("2001:db8:78::2", UDP, &udp()),
        XDP_PASS,
        Reason::Pass,
        "other source",
    );
}

// ---- socket filter --------------------------------------------------------------------------

#[test]
fn socket_filter_applies_the_blocklist() {
    let Some(mut h) = harness() else { return };
    block(&mut h, "10.20.0.0/16");
    block(&mut h, "2001:db8:5::/48");
    let before = h.counters().unwrap();
    assert_eq!(
        h.run_socket(&syn_v4("10.20.3.4")).unwrap(),
        0,
        "blocked IPv4 dropped"
    );
    assert_eq!(
        h.run_socket(&frame_v6("2001:db8:5::1", TCP, &tcp(SYN)))
            .unwrap(),
        0,
        "blocked IPv6 dropped"
    );
    assert_ne!(
        h.run_socket(&syn_v4("10.21.3.4")).unwrap(),
        0,
        "other IPv4 kept"
    );
    assert_ne!(
        h.run_socket(&frame_v6("2001:db8:6::1", TCP, &tcp(SYN)))
            .unwrap(),
        0,
        "other IPv6 kept"
    );
    let after = h.counters().unwrap();
    assert_eq!(
        after[Reason::DropBlock as usize] - before[Reason::DropBlock as usize],
        2
    );
    assert_eq!(
        after[Reason::Pass as usize] - before[Reason::Pass as usize],
        2
    );
}

// ---- cost -----------------------------------------------------------------------------------

#[test]
fn repeated_runs_count_every_packet_and_report_the_cost() {
    let Some(mut h) = harness() else { return };
    block(&mut h, "10.0.0.0/8");
    for i in 0..1_000u32 {
        // A realistic trie: a thousand /32s next to the /8.
        let [a, b, c, d] = (0xC633_0000 + i).to_be_bytes();
        block(&mut h, &format!("{a}.{b}.{c}.{d}"));
    }
    let n = 100_000;
    for (what, frame, action, reason) in [
        (
            "blocked SYN",
            syn_v4("10.9.8.7"),
            XDP_DROP,
            Reason::DropBlock,
        ),
        (
            "allowed ACK",
            frame_v4("192.0.2.200", TCP, &tcp(ACK)),
            XDP_PASS,
            Reason::Pass,
        ),
        (
            "ARP",
            {
                let mut f = eth(&[], 0x0806);
                f.extend_from_slice(&[0u8; 28]);
                f
            },
            XDP_PASS,
            Reason::Pass,
        ),
    ] {
        // Buckets on (so the cost includes the SZ_RATE update) but too large to ever drop.
        h.set_rates(u32::MAX, u32::MAX, u32::MAX, u32::MAX).unwrap();
        let before = h.counters().unwrap();
        let (got, per_run) = h.time_xdp(&frame, n).unwrap();
        let after = h.counters().unwrap();
        assert_eq!(got, action, "{what}");
        assert_eq!(
            after[reason as usize] - before[reason as usize],
            u64::from(n),
            "{what}: every run counted"
        );
        eprintln!(
            "{what}: {} ns per run in the kernel (BPF_PROG_TEST_RUN, {n} repeats)",
            per_run.as_nanos()
        );
    }
}
