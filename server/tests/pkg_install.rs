//! The Debian package end to end (root): built from the binary under test through the same code
//! as `cargo xtask package`, installed with `dpkg -i`, checked (user, files, modes, conffile,
//! unit), then run as the `subzero` user with exactly the unit's capabilities (`setpriv`): the
//! XDP gate attaches on a veth and `/v1/authenticate` answers; without `CAP_BPF` it serves with
//! the gate off and says so once. Purged at the end (also when the test fails).
//!
//! With `CI=true` it must run; elsewhere it skips, saying why, when not root or a tool is
//! missing. It takes the gate pin lock: the gate tests share `/sys/fs/bpf/subzero`.

#[path = "gate_support.rs"]
mod support;

#[allow(dead_code, reason = "the test uses a subset of the packaging module")]
#[path = "../../xtask/src/package.rs"]
mod package;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subzero::config::Config;
use support::{connect_from, privileged, wait_for, NetNs, PinLock};

/// The capabilities the unit must grant, no more (systemd's spelling).
const UNIT_CAPS: [&str; 4] = [
    "CAP_BPF",
    "CAP_NET_ADMIN",
    "CAP_PERFMON",
    "CAP_NET_BIND_SERVICE",
];
/// Longest wait for the installed server to answer.
const START_WAIT: Duration = Duration::from_secs(30);
/// Per-request timeout from the namespace.
const T: Duration = Duration::from_secs(2);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Root, iproute2 and the Debian tools; the pin lock. `None` (skip, said why) elsewhere; a
/// panic under `CI=true`.
fn setup() -> Option<PinLock> {
    let what = "the Debian package test";
    if !privileged(what) {
        return None;
    }
    for tool in ["dpkg", "dpkg-deb", "setpriv", "adduser", "strip"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !ci(),
                "CI=true but `{tool}` is missing: {what} must run in CI"
            );
            eprintln!("skipping {what}: `{tool}` is missing");
            return None;
        }
    }
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", package::NAME]));
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "a `subzero` package is already installed here; this test installs and purges its own"
    );
    Some(PinLock::take_and_clear_pins())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The installed package; purged on drop if the test did not purge it itself.
struct Installed {
    purged: bool,
}

impl Installed {
    fn install(deb: &Path) -> Installed {
        let installed = Installed { purged: false };
        run_ok(Command::new("dpkg").arg("-i").arg(deb));
        installed
    }

    /// `dpkg --purge`, then checks that nothing it made is left.
    fn purge(mut self) {
        self.purged = true;
        run_ok(Command::new("dpkg").args(["--purge", package::NAME]));
        let user = run(Command::new("getent").args(["passwd", package::NAME]));
        assert!(!user.status.success(), "the subzero user is gone");
        let group = run(Command::new("getent").args(["group", package::NAME]));
        assert!(!group.status.success(), "the subzero group is gone");
        for path in [
            package::BIN_PATH,
            package::UNIT_PATH,
            "/etc/subzero",
            package::DATA_DIR,
            support::PIN_DIR,
        ] {
            assert!(!Path::new(path).exists(), "{path} left after purge");
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = Command::new("dpkg")
                .args(["--purge", package::NAME])
                .output();
        }
    }
}

/// `getent passwd subzero` → (uid, gid, home, shell).
fn subzero_user() -> (u32, u32, String, String) {
    let line = run_ok(Command::new("getent").args(["passwd", package::NAME]));
    let f: Vec<&str> = line.trim().split(':').collect();
    assert_eq!(f.len(), 7, "{line}");
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[5].to_owned(),
        f[6].to_owned(),
    )
}

/// Asserts `path`'s owner, group and permission bits.
fn assert_owned(path: &str, uid: u32, gid: u32, mode: u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (uid, gid, mode),
        "{path}: owner, group, mode (octal {:o})",
        m.mode() & 0o7777
    );
}

/// The values of `key=` lines of the installed unit.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// `setpriv` arguments for a capability set: inheritable, ambient and bounding all exactly
/// `caps` (systemd names), no new privileges.
fn setpriv_caps(caps: &[&str]) -> Vec<String> {
    let mut list = String::new();
    for cap in caps {
        list.push_str(",+");
        list.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    vec![
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--no-new-privs".to_owned(),
    ]
}

/// `setpriv` as the subzero user with `caps`, then `args`.
fn as_subzero(caps: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        package::NAME,
        "--regid",
        package::NAME,
        "--init-groups",
    ])
    .args(setpriv_caps(caps))
    .arg("--")
    .args(args);
    cmd
}

/// The unit's `Limit*` value for `key`, capped at what this process may grant (no
/// `CAP_SYS_RESOURCE` in a container); prints when it is capped.
fn unit_limit(unit: &str, key: &str, resource: libc::__rlimit_resource_t) -> libc::rlim_t {
    let text = unit_values(unit, key)
        .pop()
        .unwrap_or_else(|| panic!("{key}"));
    let want = if text == "infinity" {
        libc::RLIM_INFINITY
    } else {
        text.parse().unwrap()
    };
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    let rc = unsafe { libc::getrlimit(resource, &raw mut cur) };
    assert_eq!(rc, 0);
    if want > cur.rlim_max {
        eprintln!(
            "{key}={text}: this process may grant at most {} (no CAP_SYS_RESOURCE); using that",
            cur.rlim_max
        );
    }
    want.min(cur.rlim_max)
}

/// The installed server run by `setpriv`, with its stderr collected; SIGKILLed on drop.
struct Served {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Served {
    fn start(unit: &str, caps: &[&str], addr: SocketAddr, iface: &str, probe: &NetNs) -> Served {
        let memlock = unit_limit(unit, "LimitMEMLOCK", libc::RLIMIT_MEMLOCK);
        let nofile = unit_limit(unit, "LimitNOFILE", libc::RLIMIT_NOFILE);
        let listen = addr.to_string();
        let mut cmd = as_subzero(
            caps,
            &[
                package::BIN_PATH,
                "serve",
                "--config",
                package::CONFIG_PATH,
                "--listen",
                &listen,
                "--shards",
                "1",
                "--xdp",
                iface,
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; only integers cross into the child.
        unsafe {
            cmd.pre_exec(move || {
                for (resource, value) in [
                    (libc::RLIMIT_MEMLOCK, memlock),
                    (libc::RLIMIT_NOFILE, nofile),
                ] {
                    let lim = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if libc::setrlimit(resource, &raw const lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start the installed subzero");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[installed subzero] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let served = Served { child, log };
        let src = probe.peer_ips[0];
        wait_for(
            "the installed server answers /healthz",
            START_WAIT,
            || match probe.run(move || support::healthz_from(src, addr, T)) {
                Ok(line) if line.contains("200") => Ok(()),
                other => Err(other),
            },
        );
        served
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request from `src` inside `ns` (`Connection: close`); the whole response.
fn http_from(ns: &NetNs, src: Ipv4Addr, addr: SocketAddr, path: &str, bearer: &str) -> String {
    let head = if bearer.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {bearer}\r\n")
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{head}Connection: close\r\n\r\n");
    ns.run(move || {
        let mut s = connect_from(src, addr, T).expect("connect from the namespace");
        s.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    })
}

/// A token from the installed binary, run as the subzero user on the service's data dir.
fn issue_token() -> String {
    let out = run_ok(&mut as_subzero(
        &[],
        &[
            package::BIN_PATH,
            "token",
            "issue",
            "--data-dir",
            package::DATA_DIR,
            "--sub",
            "alice",
            "--aud",
            "subzero",
            "--scope",
            "read",
        ],
    ));
    out.trim().to_owned()
}

/// `GET /v1/authenticate` with a fresh token answers 200 with alice's headers.
fn assert_authenticates(ns: &NetNs, addr: SocketAddr) {
    let token = issue_token();
    let resp = http_from(ns, ns.peer_ips[0], addr, "/v1/authenticate", &token);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-auth-subject: alice"),
        "{resp}"
    );
    let refused = http_from(ns, ns.peer_ips[0], addr, "/v1/authenticate", "not.a.token");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
}

/// The conffile spells out the built-in defaults: parsed, it is the configuration an empty file
/// gives, except `data_dir`. Runs everywhere (no root needed).
#[test]
fn conffile_spells_out_the_built_in_defaults() {
    let base = Path::new("/etc/subzero");
    let mut packaged = Config::from_toml(package::CONFIG, base).expect("the conffile parses");
    assert_eq!(packaged.server.data_dir, Path::new(package::DATA_DIR));
    let built_in = Config::from_toml("", base).unwrap();
    packaged
        .server
        .data_dir
        .clone_from(&built_in.server.data_dir);
    // The gate keeps its own copy (for blocklist.json).
    assert_eq!(packaged.gate.data_dir, Path::new(package::DATA_DIR));
    packaged.gate.data_dir.clone_from(&built_in.gate.data_dir);
    assert_eq!(format!("{packaged:#?}"), format!("{built_in:#?}"));
}

/// Checks the user, the files and their modes, the conffile and the unit after `dpkg -i`.
fn check_installed_files() -> String {
    let (uid, gid, home, shell) = subzero_user();
    assert!(uid < 1000, "a system user (uid {uid})");
    assert_eq!(home, package::DATA_DIR);
    assert_eq!(shell, "/usr/sbin/nologin");
    assert_owned(package::BIN_PATH, 0, 0, 0o755);
    assert_owned(package::UNIT_PATH, 0, 0, 0o644);
    assert_owned("/etc/subzero", 0, gid, 0o750);
    assert_owned(package::CONFIG_PATH, 0, gid, 0o640);
    assert_owned(package::DATA_DIR, uid, gid, 0o750);
    let conffiles =
        run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", package::NAME]));
    assert!(conffiles.contains(package::CONFIG_PATH), "{conffiles}");
    let config = std::fs::read_to_string(package::CONFIG_PATH).unwrap();
    assert!(
        config.contains("data_dir = \"/var/lib/subzero\""),
        "{config}"
    );

    let unit = std::fs::read_to_string(package::UNIT_PATH).unwrap();
    assert_eq!(
        unit,
        package::UNIT,
        "the unit installed is scripts/subzero.service"
    );
    for (key, want) in [
        ("User", "subzero"),
        ("Group", "subzero"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "subzero"),
        ("LimitMEMLOCK", "infinity"),
    ] {
        assert_eq!(unit_values(&unit, key), [want], "{key}= in the unit");
    }
    assert!(
        !unit_values(&unit, "LimitNOFILE").is_empty(),
        "LimitNOFILE="
    );
    assert!(
        unit_values(&unit, "ReadWritePaths").contains(&"/sys/fs/bpf".to_owned()),
        "ReadWritePaths=/sys/fs/bpf"
    );
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let caps: Vec<String> = unit_values(&unit, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert_eq!(caps, UNIT_CAPS, "{key}= is exactly the four capabilities");
    }
    verify_unit();
    unit
}

/// `systemd-analyze verify` accepts the unit, where systemd's tools are installed (systemd
/// need not be PID 1: nothing is started through systemctl here).
fn verify_unit() {
    let has = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!("systemd-analyze missing: the unit is not verified");
        return;
    }
    let out = run(Command::new("systemd-analyze")
        .args(["verify", package::UNIT_PATH])
        .env("SYSTEMD_LOG_LEVEL", "warning"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("subzero.service"),
        "systemd-analyze verify warns about the unit: {stderr}"
    );
}

/// Runs the unit's `ExecStartPre=+...` lines (the privileged ones) as systemd would, as root.
fn exec_start_pre(unit: &str) {
    let pre = unit_values(unit, "ExecStartPre");
    assert!(!pre.is_empty(), "the unit prepares the pin directory");
    for line in pre {
        let argv: Vec<&str> = line.trim_start_matches('+').split_whitespace().collect();
        run_ok(Command::new(argv[0]).args(&argv[1..]));
    }
    let (uid, gid, _, _) = subzero_user();
    assert_owned(support::PIN_DIR, uid, gid, 0o750);
}

#[test]
fn deb_installs_and_serves_with_exactly_the_units_capabilities() {
    let Some(_lock) = setup() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let deb = package::build(&package::PackageSpec {
        binary: Path::new(env!("CARGO_BIN_EXE_subzero")),
        version: env!("CARGO_PKG_VERSION"),
        out_dir: dir.path(),
        compression: "gzip",
    })
    .expect("build the .deb");
    let installed = Installed::install(&deb);
    let unit = check_installed_files();
    exec_start_pre(&unit);
    let ns = NetNs::veth('p');
    {
        // Exactly the unit's capabilities: the gate attaches and authentication answers.
        let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
        let served = Served::start(&unit, &UNIT_CAPS, addr, &ns.host_if, &ns);
        assert!(ns.host_has_xdp(), "XDP attached by the unprivileged server");
        let metrics = http_from(&ns, ns.peer_ips[0], addr, "/metrics", "");
        assert!(
            metrics.contains("subzero_gate_mode{mode=\"native\"} 1")
                || metrics.contains("subzero_gate_mode{mode=\"generic\"} 1"),
            "{metrics}"
        );
        assert_authenticates(&ns, addr);
        let (uid, _, _, _) = subzero_user();
        let keys = std::fs::metadata(format!("{}/keys", package::DATA_DIR)).unwrap();
        assert_eq!(keys.uid(), uid, "the service wrote its keys as subzero");
        assert!(
            !served.log().iter().any(|l| l.contains("gate off")),
            "{:?}",
            served.log()
        );
    }
    {
        // Without CAP_BPF: serving, gate off, said once.
        let caps: Vec<&str> = UNIT_CAPS
            .iter()
            .copied()
            .filter(|c| *c != "CAP_BPF")
            .collect();
        let addr = SocketAddr::from((ns.host_ip, support::free_port(ns.host_ip)));
        let served = Served::start(&unit, &caps, addr, &ns.host_if, &ns);
        assert!(!ns.host_has_xdp(), "no XDP without CAP_BPF");
        let metrics = http_from(&ns, ns.peer_ips[0], addr, "/metrics", "");
        assert!(
            metrics.contains("subzero_gate_mode{mode=\"off\"} 1"),
            "{metrics}"
        );
        assert_authenticates(&ns, addr);
        let said: Vec<String> = served
            .log()
            .into_iter()
            .filter(|l| l.contains("gate off"))
            .collect();
        assert_eq!(said.len(), 1, "the gate being off is said once: {said:?}");
    }
    installed.purge();
}
