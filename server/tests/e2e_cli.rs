//! The CLI as a user runs it: keygen, token issue/verify, and exit codes 0/1/2 with one clear
//! sentence on stderr.

mod common;

use common::cli;

#[test]
fn keygen_issue_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, jwks, err) = cli(&["keygen", "--data-dir", d]);
    assert_eq!(code, 0, "{err}");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let pem = dir.path().join("keys").join(format!("{kid}.pem"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pem).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "private key must be 0600");

    // A second keygen refuses to overwrite the ring.
    let (code, _, err) = cli(&["keygen", "--data-dir", d]);
    assert_eq!(code, 1);
    assert!(err.starts_with("subzero: "), "{err}");

    let (code, token, err) = cli(&[
        "token",
        "issue",
        "--data-dir",
        d,
        "--sub",
        "svc",
        "--aud",
        "api",
        "--scope",
        "read",
        "--ttl-s",
        "120",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = token.trim();
    let (code, claims, err) = cli(&["token", "verify", "--data-dir", d, token]);
    assert_eq!(code, 0, "{err}");
    let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["scope"], "read");

    // Verify against a JWKS file.
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let (code, _, err) = cli(&[
        "token",
        "verify",
        "--jwks",
        jwks_path.to_str().unwrap(),
        token,
    ]);
    assert_eq!(code, 0, "{err}");

    // Invalid token: exit 1 and the reason.
    let mut tampered = token.to_owned();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    let (code, _, err) = cli(&["token", "verify", "--data-dir", d, &tampered]);
    assert_eq!(code, 1);
    assert!(err.contains("token is invalid"), "{err}");
    let (code, _, err) = cli(&["token", "verify", "--data-dir", d, "--aud", "other", token]);
    assert_eq!(code, 1);
    assert!(err.contains("audience"), "{err}");
}

#[test]
fn usage_and_config_errors_exit_2_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, err) = cli(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("lisen") && err.contains("bad.toml"), "{err}");

    let (code, _, err) = cli(&["serve", "--config", "/nonexistent/subzero.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/subzero.toml"), "{err}");

    let (code, _, err) = cli(&["serve", "--shards", "zero"]);
    assert_eq!(code, 2);
    assert!(err.contains("shards"), "{err}");

    let (code, _, _) = cli(&["token", "issue", "--sub", "x"]);
    assert_eq!(code, 2, "missing --aud is a usage error");

    let missing = dir.path().join("empty");
    let (code, _, err) = cli(&[
        "token",
        "issue",
        "--data-dir",
        missing.to_str().unwrap(),
        "--sub",
        "x",
        "--aud",
        "y",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("keygen"), "says what to do: {err}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["keygen", "--help"],
        vec!["token", "issue", "--help"],
        vec!["token", "verify", "--help"],
        vec!["stats", "--help"],
        vec!["block", "add", "--help"],
        vec!["block", "list", "--help"],
    ] {
        let (code, out, _) = cli(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
}

#[test]
fn port_in_use_is_a_clear_runtime_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = cli(&[
        "serve",
        "--listen",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--shards",
        "1",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
}
