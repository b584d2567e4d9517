//! The fleet's global rate limit: a check answered from a local lease (`LeaseTable::take`,
//! pure) against one Redis round trip per check (EVALSHA of the GCRA script on a loopback
//! redis-server this bench starts on a free port). Wall time: the round trip is mostly
//! waiting, which thread CPU time would not see. Without redis-server only the lease half runs.

use std::hint::black_box;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use subzero::fleet::lease::{acquire, Granted, LeaseTable, Take};

/// A rate and burst no bench run exhausts, so every check is allowed.
const RATE: f64 = 1_000_000.0;
const BURST: u32 = 1_000_000;

/// A redis-server child on a free loopback port, killed on Drop.
struct Server {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("subzero-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).ok()?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if server.connect().is_some() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn connect(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        let mut conn = client.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut conn).ok()?;
        Some(conn)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lease_vs_round_trip(c: &mut Criterion) {
    // A check answered from the lease; a refill (pure, no Redis) when the lease runs out, as
    // rarely as the size cap (burst / 4) allows.
    c.bench_function("fleet/check_from_lease", |b| {
        let mut table = LeaseTable::new(&[BURST], 3_600_000, 1024);
        let now = 0;
        b.iter(|| match table.take(0, black_box("client-42"), 1, now) {
            Take::Allowed { remaining } => remaining,
            Take::NeedLease { want } => match table.grant(0, "client-42", 1, want, now, now) {
                Granted::Allowed { remaining } => remaining,
                other => panic!("{other:?}"),
            },
        });
    });
    let Some(server) = Server::start() else {
        eprintln!("skipping fleet/check_redis_round_trip: redis-server is not installed");
        return;
    };
    let mut conn = server.connect().expect("connect to the bench redis-server");
    c.bench_function("fleet/check_redis_round_trip", |b| {
        b.iter(|| {
            let g = acquire(&mut conn, "bench", black_box("client-42"), RATE, BURST, 1)
                .expect("EVALSHA");
            assert_eq!(g.granted, 1);
        });
    });
    // Leases refilled from the real Redis: what a shard's checks cost on average. The checks
    // cycle over 100 keys so no key's rate (10^6/s) is the bottleneck.
    let keys: Vec<String> = (0..100).map(|i| format!("client-{i}")).collect();
    let mut table = LeaseTable::new(&[BURST], 50, 1024);
    let start = Instant::now();
    let mut i = 0;
    c.bench_function("fleet/check_lease_refilled_from_redis", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = keys[i].as_str();
            let now = start.elapsed().as_millis() as u64;
            match table.take(0, key, 1, now) {
                Take::Allowed { remaining } => remaining,
                Take::NeedLease { want } => {
                    let g = acquire(&mut conn, "bench", key, RATE, BURST, want).expect("EVALSHA");
                    let at = start.elapsed().as_millis() as u64;
                    match table.grant(0, key, 1, g.granted, now, at) {
                        Granted::Allowed { remaining } => remaining,
                        Granted::Denied | Granted::Late => 0,
                    }
                }
            }
        });
    });
    let n = table.counts.hits + table.counts.misses;
    eprintln!(
        "fleet/check_lease_refilled_from_redis: {} checks, {:.3} % needed Redis, {} units expired unused",
        n,
        100.0 * table.counts.misses as f64 / n.max(1) as f64,
        table.counts.expired_units
    );
}

criterion_group!(benches, lease_vs_round_trip);
criterion_main!(benches);
