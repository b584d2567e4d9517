//! Faults of the host, end to end: a corrupt key file, config, store, vault key or audit segment
//! stops the server at start with a non-zero exit and a message naming the file (and the
//! record, for the audit log); a shard that panics takes the whole process down with exit
//! code 101 and a log line; a full data disk answers every write with 503 while
//! authentication and reads go on, and writes resume once space returns (privileged: a tmpfs).

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bearer, bin, issue, Server};

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
