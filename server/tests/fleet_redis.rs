//! The fleet's global rate limit against a real redis-server and a real three-master Redis
//! Cluster: the GCRA script grants at most the burst and refills at the rate, and three
//! "nodes" (three connections, three lease tables) never admit more than the stated bound.

mod redis_support;

use std::time::Instant;

use redis_support::{Redis, RedisCluster};
use subzero::fleet::lease::{
    acquire, acquire_many, interval_us, AcquireAsk, Granted, LeaseTable, Take,
};

const LEASE_MS: u64 = 50;

fn now_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Takes the whole burst, then shows the next acquire grants nothing with a retry_after, and
/// that units come back (polled, no fixed sleep).
fn burst_then_refill(conn: &mut dyn redis::ConnectionLike, key: &str) {
    let (rate, burst) = (20.0, 10);
    let first = acquire(conn, "r", key, rate, burst, 25).expect("acquire");
    assert_eq!(
        first.granted, 10,
        "never more than the burst at once: {first:?}"
    );
    assert_eq!(first.remaining, 0);
    let next = acquire(conn, "r", key, rate, burst, 1).expect("acquire");
    assert_eq!(next.granted, 0, "{next:?}");
    assert!((1..=50).contains(&next.retry_after_ms), "{next:?}");
    // Refill: poll until a unit is granted again; it is at most one at a time while the
    // budget refills at 20/s and we poll far faster than that.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let g = acquire(conn, "r", key, rate, burst, 1).expect("acquire");
        if g.granted == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no unit came back within 10 s");
        std::thread::yield_now();
    }
}

/// Three nodes hammer one key, `n_checks` checks each, round-robin; returns (admitted,
/// elapsed ms).
fn hammer(
    conns: &mut [&mut dyn redis::ConnectionLike],
    key: &str,
    rate: f64,
    burst: u32,
    n_checks: usize,
) -> (u64, u64) {
    let mut tables: Vec<LeaseTable> = conns
        .iter()
        .map(|_| LeaseTable::new(&[burst], LEASE_MS, 16))
        .collect();
    let start = Instant::now();
    let mut admitted = 0u64;
    for _ in 0..n_checks {
        for (conn, table) in conns.iter_mut().zip(&mut tables) {
            let asked_at = now_ms(start);
            match table.take(0, key, 1, asked_at) {
                Take::Allowed { .. } => admitted += 1,
                Take::NeedLease { want } => {
                    let g = acquire(*conn, "hammer", key, rate, burst, want).expect("acquire");
                    match table.grant(0, key, 1, g.granted, asked_at, now_ms(start)) {
                        Granted::Allowed { .. } => admitted += 1,
                        Granted::Denied | Granted::Late => {}
                    }
                }
            }
        }
    }
    // Elapsed rounded up: every grant happened within it.
    (admitted, now_ms(start) + 1)
}

fn assert_within_bound(admitted: u64, elapsed_ms: u64, rate: f64, burst: u32) {
    let lease_overshoot = rate * LEASE_MS as f64 / 1000.0;
    let interval_s = interval_us(rate) as f64 / 1e6;
    let bound = f64::from(burst) + elapsed_ms as f64 / 1000.0 / interval_s + 3.0 * lease_overshoot;
    eprintln!("admitted {admitted} in {elapsed_ms} ms; bound {bound:.1}");
    assert!(
        admitted as f64 <= bound,
        "admitted {admitted} > bound {bound:.1} over {elapsed_ms} ms"
    );
    // And the limit was reached: the budget, not the leases, decided.
    assert!(admitted >= u64::from(burst), "admitted only {admitted}");
}

#[test]
fn single_redis_grants_the_burst_then_refills_at_the_rate() {
    if !redis_support::available("fleet_redis") {
        return;
    }
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connect");
    burst_then_refill(&mut conn, "alice");
    // The key lives under its hash-tagged name and expires by itself.
    let ttl = redis.cli(&["PTTL", "sz:rl:{r:alice}"]).expect("PTTL");
    let ttl: i64 = ttl.trim().parse().expect("a number");
    assert!((1..=1_000).contains(&ttl), "PTTL {ttl}");
}

#[test]
fn a_spent_budget_survives_a_redis_restart_on_the_same_port() {
    if !redis_support::available("fleet_redis") {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url();
    let client = redis::Client::open(url.clone()).expect("client");
    let mut conn = client.get_connection().expect("connect");
    // A slow refill (one unit per 1000 s), so the restart cannot bring a unit back.
    let spent = acquire(&mut conn, "r", "carol", 0.001, 5, 5).expect("acquire");
    assert_eq!(spent.granted, 5);
    redis.stop();
    assert!(
        acquire(&mut conn, "r", "carol", 0.001, 5, 1).is_err(),
        "Redis is down"
    );
    redis.restart();
    assert_eq!(redis.url(), url, "same port");
    // The append-only file (fsync always) kept the TAT: still nothing to grant.
    let mut conn = client.get_connection().expect("reconnect");
    let after = acquire(&mut conn, "r", "carol", 0.001, 5, 1).expect("acquire");
    assert_eq!(after.granted, 0, "{after:?}");
    assert!(after.retry_after_ms > 900_000, "{after:?}");
}

#[test]
fn three_nodes_on_one_redis_stay_within_the_lease_bound() {
    if !redis_support::available("fleet_redis") {
        return;
    }
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).expect("client");
    let mut c: Vec<redis::Connection> = (0..3)
        .map(|_| client.get_connection().expect("connect"))
        .collect();
    let [a, b, d] = &mut c[..] else {
        unreachable!()
    };
    let mut conns: [&mut dyn redis::ConnectionLike; 3] = [a, b, d];
    let (rate, burst) = (200.0, 40);
    let (admitted, elapsed_ms) = hammer(&mut conns, "shared", rate, burst, 1_500);
    assert_within_bound(admitted, elapsed_ms, rate, burst);
}

#[test]
fn three_nodes_on_a_redis_cluster_stay_within_the_lease_bound() {
    if !redis_support::available("fleet_redis cluster") {
        return;
    }
    let cluster = RedisCluster::start(3);
    let client = redis::cluster::ClusterClient::new(cluster.seeds()).expect("cluster client");
    let mut one = client.get_connection().expect("connect");
    burst_then_refill(&mut one, "bob");
    let mut c: Vec<redis::cluster::ClusterConnection> = (0..3)
        .map(|_| client.get_connection().expect("connect"))
        .collect();
    let [a, b, d] = &mut c[..] else {
        unreachable!()
    };
    let mut conns: [&mut dyn redis::ConnectionLike; 3] = [a, b, d];
    let (rate, burst) = (200.0, 40);
    // Several keys land in different slots (so on different masters); each holds its bound.
    for key in ["k1", "k2", "k3"] {
        let (admitted, elapsed_ms) = hammer(&mut conns, key, rate, burst, 600);
        assert_within_bound(admitted, elapsed_ms, rate, burst);
    }
    // The three keys hash to slots of three different masters (`--cluster create` gives each
    // of the 3 masters a third of the 16384 slots), so the script ran on every master.
    let mut masters: Vec<u32> = ["k1", "k2", "k3"]
        .iter()
        .map(|k| {
            let slot = cluster.nodes[0]
                .cli(&["CLUSTER", "KEYSLOT", &format!("sz:rl:{{hammer:{k}}}")])
                .expect("KEYSLOT");
            slot.trim().parse::<u32>().expect("a slot") / 5462
        })
        .collect();
    masters.dedup();
    masters.sort_unstable();
    masters.dedup();
    assert_eq!(masters, [0, 1, 2]);
}

/// One pipeline of asks on a fresh server (the script not loaded yet, so the NOSCRIPT path
/// runs): each ask is granted as `acquire` would, in order, two asks of one key share its
/// budget, and a second pipeline finds the script loaded.
#[test]
fn a_pipeline_of_asks_loads_the_script_and_grants_each_in_order() {
    if !redis_support::available("fleet_redis") {
        return;
    }
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let ask = |key, want| AcquireAsk {
        rule: "p",
        key,
        // One unit per 100 s: nothing refills while the test runs, however slow the machine.
        rate_per_s: 0.01,
        burst: 10,
        want,
    };
    let asks = [ask("a", 4), ask("b", 25), ask("a", 8), ask("c", 1)];
    let got = acquire_many(&mut conn, &asks).expect("pipeline");
    let granted: Vec<u32> = got.iter().map(|g| g.granted).collect();
    // "a": 4 of its 10, then the 6 left; "b": the burst; "c": one.
    assert_eq!(granted, [4, 10, 6, 1], "{got:?}");
    assert_eq!((got[2].remaining, got[1].remaining), (0, 0));
    let again = acquire_many(&mut conn, &[ask("a", 1), ask("d", 2)]).expect("pipeline");
    assert_eq!(again[0].granted, 0, "a's budget is spent: {again:?}");
    assert!(again[0].retry_after_ms >= 1);
    assert_eq!(again[1].granted, 2);
    // The single-ask path sees the same shared state.
    let d = acquire(&mut conn, "p", "d", 0.01, 10, 10).unwrap();
    assert_eq!(d.granted, 8, "{d:?}");
}
