//! Faults of the host, end to end: a corrupt key file, config, store, vault key or audit segment
//! stops the server at start with a non-zero exit and a message naming the file (and the
//! record, for the audit log); a shard that panics takes the whole process down with exit
//! code 101 and a log line; a full data disk answers every write with 503 while
//! authentication and reads go on, and writes resume once space returns (privileged: a tmpfs);
//! `kill -9` under a load of every durable write kind at once (revocations, relationships,
//! vault entries, channels, audit batches) loses no write that got its 200.

mod common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bearer, bin, issue, Server};
use subzero::auth::{Claims, KeyRing};

const ADMIN: &str = "admin-token-for-fault-tests";

fn write_config(dir: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("admin.token"), ADMIN).unwrap();
    let path = dir.join("subzero.toml");
    std::fs::write(
        &path,
        format!("[admin]\ntoken_file = \"admin.token\"\n{extra}"),
    )
    .unwrap();
    path
}

/// Runs `subzero serve` on `data_dir` with `config` (plus `env`) until it exits, for at most
/// 20 s; its exit code (`None`: killed by a signal) and stderr. Panics if it keeps running.
fn run_until_exit(data_dir: &Path, config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start subzero");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("subzero kept running: {}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap())
}

/// A data dir the server has run on: keys, store, vault key with one sealed entry, and an
/// audit log of three one-event batches.
fn populated_data_dir(dir: &Path) -> PathBuf {
    let config = write_config(dir, "");
    let server = Server::start(
        dir,
        &["--shards", "2", "--config", config.to_str().unwrap()],
    );
    let alice = issue(dir, "alice", "subzero", &[]);
    let resp = server.request(
        "PUT",
        "/v1/vault/github",
        &[("Authorization", &bearer(&alice))],
        r#"{"token":"gho_secret"}"#,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    for n in 0..3 {
        let body = format!(
            r#"{{"events":[{{"actor":"a{n}","action":"login","resource":"r","outcome":"ok","source":"s"}}]}}"#
        );
        let resp = server.request(
            "POST",
            "/v1/audit/events",
            &[("Authorization", &bearer(ADMIN))],
            &body,
        );
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert!(server.terminate(), "clean stop");
    config
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Overwrites `len` bytes in the middle of `path` with a pattern no encoder produces.
fn damage_middle(path: &Path, len: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let start = bytes.len() / 2 - len / 2;
    for b in &mut bytes[start..start + len] {
        *b = 0xa5;
    }
    std::fs::write(path, bytes).unwrap();
}

fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[test]
fn a_corrupt_file_in_the_data_dir_or_config_stops_the_start_naming_it() {
    let base = tempfile::tempdir().unwrap();
    let good = base.path().join("good");
    std::fs::create_dir(&good).unwrap();
    let config = populated_data_dir(&good);

    // (case, file to damage relative to the data dir, text the message must hold besides the
    // file name).
    let key = only_file(&good.join("keys"), ".pem");
    let key = key.strip_prefix(&good).unwrap().to_owned();
    let segment = only_file(&good.join("audit"), ".log");
    let segment = segment.strip_prefix(&good).unwrap().to_owned();
    let cases: [(&str, PathBuf, &str); 4] = [
        ("signing key", key, "key"),
        ("store", PathBuf::from("subzero.redb"), "store"),
        ("vault master key", PathBuf::from("vault.key"), "vault"),
        ("audit segment", segment, "record seq"),
    ];
    for (case, file, what) in cases {
        let dir = base.path().join(case.replace(' ', "-"));
        copy_dir(&good, &dir);
        let path = dir.join(&file);
        if case == "vault master key" {
            // The key is 32 raw bytes: any 32 bytes are a key, a wrong one opens nothing.
            std::fs::write(&path, [0x5a_u8; 32]).unwrap();
        } else {
            damage_middle(&path, 16);
        }
        let config = dir.join("subzero.toml");
        let (code, stderr) = run_until_exit(&dir, &config, &[]);
        println!(
            "{case}: exit {code:?}: {}",
            stderr.lines().last().unwrap_or("")
        );
        assert!(
            matches!(code, Some(c) if c != 0),
            "{case}: exit {code:?}\n{stderr}"
        );
        assert!(
            !stderr.contains("listening on"),
            "{case}: served on a damaged file\n{stderr}"
        );
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&path.display().to_string()),
            "{case}: the message does not name {}:\n{stderr}",
            path.display()
        );
        assert!(last.contains(what), "{case}: {last}");
    }

    // A config that is not TOML, and one with an unknown key: exit 2, the file named.
    let dir = base.path().join("config");
    copy_dir(&good, &dir);
    for (case, text, what) in [
        ("config not TOML", "[admin\ntoken_file = 3", "TOML"),
        (
            "config unknown key",
            "[server]\nlisten_typo = 1\n",
            "listen_typo",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = run_until_exit(&dir, &path, &[]);
        println!(
            "{case}: exit {code:?}: {}",
            stderr.lines().last().unwrap_or("")
        );
        assert_eq!(code, Some(2), "{case}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("bad.toml") && last.contains(what),
            "{case}: {stderr}"
        );
    }

    // The untouched copy still starts: the refusals above are about the damage.
    let server = Server::start(&good, &["--config", config.to_str().unwrap()]);
    assert!(
        server.terminate(),
        "the undamaged data dir starts and stops cleanly"
    );
}

#[test]
fn a_panicking_shard_takes_the_process_down_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    // Debug builds only (the test binary is one): shard 1 panics once it is ready while
    // shard 0 would go on serving.
    let (code, stderr) = run_until_exit(
        dir.path(),
        &config,
        &[("SUBZERO_TEST_PANIC_SHARD", "1"), ("RUST_BACKTRACE", "0")],
    );
    println!("exit {code:?}");
    assert_eq!(code, Some(101), "{stderr}");
    assert!(stderr.contains("injected shard panic"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("a thread panicked"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(line.contains("sz-shard-1"), "{line}");
}

/// A tmpfs mounted for one test, unmounted (lazily, so a straggling file handle cannot keep
/// it) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Root can mount a tmpfs; with CI=true a missing privilege fails the test loudly, otherwise
/// the test is skipped with the reason printed.
fn can_mount() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        root || !ci,
        "CI=true: the full-disk test needs root (mount -t tmpfs)"
    );
    if !root {
        println!("skipped: the full-disk test needs root to mount a tmpfs");
    }
    root
}

/// Writes zeros to `path` until the file system says it is full.
fn fill(path: &Path) -> u64 {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Small writes fill the last partial pages.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

/// The durable write kinds.
const KINDS: [&str; 5] = [
    "revocation",
    "relationship",
    "vault entry",
    "channel",
    "audit batch",
];

/// Sends write `n` of `kind`: revokes `victim`, adds `doc:n#viewer@user:alice`, puts vault
/// entry `entry-n`, opens a channel, or appends an audit batch with actions `n{n}-*`.
fn write_once(
    addr: SocketAddr,
    kind: &str,
    n: usize,
    user: &str,
    agent: &str,
    victim: &str,
) -> Option<common::Response> {
    let admin = bearer(ADMIN);
    match kind {
        "revocation" => send_to(
            addr,
            "POST",
            "/v1/revoke",
            "",
            &serde_json::json!({ "token": victim }).to_string(),
        ),
        "relationship" => send_to(
            addr,
            "POST",
            "/v1/relationships",
            &admin,
            &format!(
                r#"{{"tuples":[{{"object":"doc:{n}","relation":"viewer","subject":"user:alice"}}]}}"#
            ),
        ),
        "vault entry" => send_to(
            addr,
            "PUT",
            &format!("/v1/vault/entry-{n}"),
            &bearer(user),
            &format!(r#"{{"token":"value-{n}"}}"#),
        ),
        "channel" => send_to(
            addr,
            "POST",
            "/v1/xaa/channel",
            &bearer(user),
            &serde_json::json!({ "agent_token": agent }).to_string(),
        ),
        // 16 events of about 1 KiB: more than the tmpfs page the segment's tail may still
        // have free, so on a full disk the batch cannot land in space already allocated.
        "audit batch" => send_to(addr, "POST", "/v1/audit/events", &admin, &audit_batch(n)),
        _ => unreachable!("{kind}"),
    }
}

/// A write that got its `200`, and what shows it later.
struct Acked {
    kind: &'static str,
    n: usize,
    victim: String,
    /// The channel's app token (a channel write).
    channel_token: Option<String>,
}

/// Whether acknowledged write `w` is visible on `server`.
fn is_visible(server: &Server, user: &str, w: &Acked) -> bool {
    let admin = bearer(ADMIN);
    match w.kind {
        "revocation" => {
            send(server, "GET", "/v1/authenticate", &bearer(&w.victim), "").status == 401
        }
        "relationship" => {
            let body = format!(
                r#"{{"subject":"user:alice","permission":"view","object":"doc:{}"}}"#,
                w.n
            );
            send(server, "POST", "/v1/permissions/check", &admin, &body).json()["allowed"] == true
        }
        "vault entry" => {
            let resp = send(
                server,
                "GET",
                &format!("/v1/vault/entry-{}", w.n),
                &bearer(user),
                "",
            );
            resp.status == 200 && resp.json()["token"] == format!("value-{}", w.n)
        }
        "channel" => {
            send(
                server,
                "GET",
                "/v1/authenticate",
                &bearer(w.channel_token.as_deref().unwrap()),
                "",
            )
            .status
                == 200
        }
        "audit batch" => {
            let resp = send(
                server,
                "GET",
                "/v1/audit/events?after=0&limit=10000",
                &admin,
                "",
            );
            let want = format!("n{}-15", w.n);
            resp.json()["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["action"] == want.as_str()))
        }
        _ => unreachable!(),
    }
}

/// An audit batch of 16 events of about 1 KiB each.
fn audit_batch(n: usize) -> String {
    let resource = "r".repeat(1000);
    let events: Vec<serde_json::Value> = (0..16)
        .map(|i| {
            serde_json::json!({"actor": "a", "action": format!("n{n}-{i}"), "resource": resource, "outcome": "ok", "source": "s"})
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

fn send_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> Option<common::Response> {
    let headers: Vec<(&str, &str)> = if auth.is_empty() {
        vec![("Content-Type", "application/json")]
    } else {
        vec![
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ]
    };
    common::try_request(addr, method, path, &headers, body)
}

fn send(server: &Server, method: &str, path: &str, auth: &str, body: &str) -> common::Response {
    send_to(server.addr, method, path, auth, body).expect("an answer")
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario in order: free space, full disk, space back, kill -9 and restart"
)]
fn a_full_data_disk_answers_writes_503_while_reads_go_on_and_writes_resume() {
    /// Writes of one kind tried on the full disk before a 503 must have come: the store may
    /// first fill pages its file already holds (a durable write, rightly a 200).
    const MAX_TRIES: usize = 64;
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(&dir.path().join("mnt"), "24m");
    let data = tmpfs.path.join("data");
    std::fs::write(dir.path().join("schema.zed"), "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer\n}\n").unwrap();
    let config = write_config(dir.path(), "[permissions]\nschema_file = \"schema.zed\"\n");
    let args = ["--shards", "2", "--config", config.to_str().unwrap()];
    let server = Server::start(&data, &args);
    let user = issue(&data, "alice", "subzero", &["read"]);
    let agent = issue(&data, "agent-7", "subzero", &["read"]);
    let auth = bearer(&user);
    let mut acked: Vec<Acked> = Vec::new();
    let mut refused: Vec<Acked> = Vec::new();
    let mut attempt = |server: &Server, kind: &'static str, n: usize| -> u16 {
        let victim = issue(&data, &format!("victim-{n}"), "subzero", &[]);
        let resp = write_once(server.addr, kind, n, &user, &agent, &victim).expect("an answer");
        let channel_token = (kind == "channel" && resp.status == 200)
            .then(|| resp.json()["app_token"].as_str().unwrap().to_owned());
        let w = Acked {
            kind,
            n,
            victim,
            channel_token,
        };
        match resp.status {
            200 => acked.push(w),
            503 => {
                assert!(
                    resp.body.contains("temporarily_unavailable"),
                    "{kind}: {}",
                    resp.body
                );
                refused.push(w);
            }
            other => panic!("{kind} write {n}: status {other} {}", resp.body),
        }
        resp.status
    };

    // On free space every write kind is acknowledged.
    for (k, kind) in KINDS.iter().enumerate() {
        assert_eq!(attempt(&server, kind, k), 200, "{kind} on free space");
    }

    let filler = tmpfs.path.join("filler");
    let filled = fill(&filler);
    println!("filled the data disk with {filled} bytes");
    let mut n = 100;
    for kind in KINDS {
        let mut n_ok = 0;
        loop {
            n += 1;
            let status = attempt(&server, kind, n);
            // Reads and authentication go on between the writes.
            assert_eq!(
                send(&server, "GET", "/v1/authenticate", &auth, "").status,
                200
            );
            let read = send(&server, "GET", "/v1/vault/entry-2", &auth, "");
            assert_eq!(read.status, 200, "vault read on a full disk: {read:?}");
            let check = send(
                &server,
                "POST",
                "/v1/permissions/check",
                &bearer(ADMIN),
                r#"{"subject":"user:alice","permission":"view","object":"doc:1"}"#,
            );
            assert_eq!(
                check.json()["allowed"],
                true,
                "permission check on a full disk: {check:?}"
            );
            let events = send(
                &server,
                "GET",
                "/v1/audit/events?after=0&limit=10",
                &bearer(ADMIN),
                "",
            );
            assert_eq!(events.status, 200, "audit read on a full disk: {events:?}");
            if status == 503 {
                break;
            }
            n_ok += 1;
            assert!(
                n_ok < MAX_TRIES,
                "{kind}: {MAX_TRIES} writes acknowledged on a full disk"
            );
        }
        println!("{kind} on a full disk: 503 after {n_ok} writes that fit in space the store already held");
    }

    std::fs::remove_file(&filler).unwrap();
    for kind in KINDS {
        n += 1;
        assert_eq!(attempt(&server, kind, n), 200, "{kind} once space returned");
    }
    println!("every kind acknowledged again once the filler was deleted");

    // kill -9 and restart: every acknowledged write is there, no refused one is.
    server.kill9();
    let server = Server::start(&data, &args);
    for w in &acked {
        assert!(
            is_visible(&server, &user, w),
            "{} {} was acknowledged and is lost",
            w.kind,
            w.n
        );
    }
    for w in refused
        .iter()
        .filter(|w| matches!(w.kind, "revocation" | "vault entry" | "audit batch"))
    {
        assert!(
            !is_visible(&server, &user, w),
            "{} {} was refused and is applied",
            w.kind,
            w.n
        );
    }
    println!(
        "{} acknowledged writes all survived kill -9; {} refused ones absent",
        acked.len(),
        refused.len()
    );
    assert!(server.terminate(), "clean stop");
    drop(tmpfs);
}

/// A token of ours for `sub`, signed in-process (a revocation victim per write).
fn sign_token(ring: &KeyRing, sub: &str) -> String {
    let now = subzero::unix_now_s();
    let claims = Claims::new_for(
        "subzero",
        sub,
        vec!["subzero".to_owned()],
        &[],
        3600,
        now,
        subzero::auth::new_jti(),
    );
    subzero::auth::sign(ring.signing_key(), ring.current_kid(), &claims)
}

/// Every vault entry listed (acknowledged or in flight at the kill) reads back exactly the
/// value written under its name; at least `n_acked` are listed.
fn assert_vault_entries_whole(server: &Server, user: &str, n_acked: usize) {
    let list = send(server, "GET", "/v1/vault", &bearer(user), "");
    assert_eq!(list.status, 200, "{}", list.body);
    let names = list.json()["names"].as_array().cloned().unwrap_or_default();
    assert!(names.len() >= n_acked, "{} names listed", names.len());
    for name in &names {
        let name = name.as_str().unwrap();
        let resp = send(
            server,
            "GET",
            &format!("/v1/vault/{name}"),
            &bearer(user),
            "",
        );
        let n = name.trim_start_matches("entry-");
        assert_eq!(resp.json()["token"], format!("value-{n}"), "{name}");
    }
}

#[test]
fn kill_9_under_load_of_every_write_kind_loses_no_acknowledged_write() {
    /// Acknowledged writes of each kind before the kill: enough that the kill lands while
    /// every kind has writes in flight.
    const ACKED_BEFORE_KILL: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("schema.zed"),
        "definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer\n}\n",
    )
    .unwrap();
    let config = write_config(dir.path(), "[permissions]\nschema_file = \"schema.zed\"\n");
    let args = ["--shards", "2", "--config", config.to_str().unwrap()];
    let server = Server::start(&data, &args);
    let user = issue(&data, "alice", "subzero", &["read"]);
    let agent = issue(&data, "agent-7", "subzero", &["read"]);
    let ring = Arc::new(KeyRing::load(&data, subzero::unix_now_s()).unwrap());
    let n_acked: Arc<Vec<AtomicUsize>> =
        Arc::new(KINDS.iter().map(|_| AtomicUsize::new(0)).collect());
    // One client per kind (two for vault entries), each writing as fast as it is answered
    // until the server dies under it.
    let mut clients = Vec::new();
    for (client_idx, kind) in KINDS.iter().copied().chain(["vault entry"]).enumerate() {
        let (addr, user, agent) = (server.addr, user.clone(), agent.clone());
        let (ring, n_acked) = (Arc::clone(&ring), Arc::clone(&n_acked));
        let kind_idx = KINDS.iter().position(|k| *k == kind).unwrap();
        clients.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0.. {
                let n = client_idx * 1_000_000 + i;
                let victim = sign_token(&ring, &format!("victim-{n}"));
                let Some(resp) = write_once(addr, kind, n, &user, &agent, &victim) else {
                    break;
                };
                assert_eq!(
                    resp.status, 200,
                    "{kind} {n} before the kill: {}",
                    resp.body
                );
                let channel_token = (kind == "channel")
                    .then(|| resp.json()["app_token"].as_str().unwrap().to_owned());
                acked.push(Acked {
                    kind,
                    n,
                    victim,
                    channel_token,
                });
                n_acked[kind_idx].fetch_add(1, Ordering::Relaxed);
            }
            acked
        }));
    }
    common::poll(
        "every kind acknowledged under load",
        Duration::from_mins(1),
        || {
            n_acked
                .iter()
                .all(|n| n.load(Ordering::Relaxed) >= ACKED_BEFORE_KILL)
                .then_some(())
        },
    );
    server.kill9();
    let acked: Vec<Acked> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let counts: Vec<String> = KINDS
        .iter()
        .map(|k| format!("{k}: {}", acked.iter().filter(|w| w.kind == *k).count()))
        .collect();
    println!("acknowledged before kill -9: {}", counts.join(", "));

    let server = Server::start(&data, &args);
    let lost: Vec<String> = acked
        .iter()
        .filter(|w| !is_visible(&server, &user, w))
        .map(|w| format!("{} {}", w.kind, w.n))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged and lost after kill -9: {lost:?}"
    );
    // Nothing half-written: every vault entry that reads back (acknowledged or in flight)
    // holds exactly its own value, and the audit chain verifies end to end.
    let n_vault_acked = acked.iter().filter(|w| w.kind == "vault entry").count();
    assert_vault_entries_whole(&server, &user, n_vault_acked);
    assert!(server.terminate(), "clean stop");
    let (code, out, err) = common::cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "audit verify after kill -9: {out}{err}");
    println!(
        "{} acknowledged writes all present after restart; audit chain verifies",
        acked.len()
    );
}
