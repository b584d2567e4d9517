//! Unit tests of config loading and validation.

use super::*;

#[test]
fn default_is_valid_and_listens_on_8080() {
    let c = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.auth.audiences, vec!["subzero".to_owned()]);
}

#[test]
fn unknown_keys_are_errors() {
    let err = Config::from_toml("[server]\nlisten_addr = \"x\"\n", Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("listen_addr"), "{err}");
}

#[test]
fn client_audiences_join_accepted_audiences() {
    let text = r#"
[[clients]]
id = "svc-a"
secret = "0123456789"
audiences = ["api"]
scopes = ["read"]
"#;
    let c = Config::from_toml(text, Path::new("/etc/subzero")).unwrap();
    assert_eq!(
        c.auth.audiences,
        vec!["subzero".to_owned(), "api".to_owned()]
    );
    c.validate().unwrap();
}

#[test]
fn paths_resolve_against_the_config_dir() {
    let text = "[server]\ndata_dir = \"data\"\nshards = 2\n[[auth.trusted_issuers]]\nissuer = \"https://idp\"\njwks_file = \"idp.json\"\n";
    let c = Config::from_toml(text, Path::new("/etc/subzero")).unwrap();
    assert_eq!(c.server.data_dir, PathBuf::from("/etc/subzero/data"));
    assert_eq!(c.server.shards, Shards::Count(2));
    assert_eq!(
        c.auth.trusted_issuers[0].jwks_file,
        PathBuf::from("/etc/subzero/idp.json")
    );
}

#[test]
fn min_batch_token_bytes_is_our_shortest_token() {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let kid = "k".repeat(43); // an RFC 7638 thumbprint: SHA-256, base64url
    let now_s = crate::unix_now_s();
    let claims = crate::auth::Claims::new_for(
        "i",
        "s",
        vec!["a".to_owned()],
        &[],
        1,
        now_s,
        crate::auth::new_jti(),
    );
    let shortest = crate::auth::sign(&key, &kid, &claims).len();
    assert!(shortest >= MIN_BATCH_TOKEN_BYTES, "{shortest}");
    assert!(
        shortest < MIN_BATCH_TOKEN_BYTES + 8,
        "stale bound: {shortest}"
    );
}

#[test]
fn max_batch_tokens_follows_max_body_bytes_and_must_fit_in_it() {
    // Default: as many of our shortest tokens as fit in 1 MiB, and that batch does fit.
    let d = Config::default();
    assert_eq!(d.auth.max_batch_tokens, 3021);
    let body = 12 + d.auth.max_batch_tokens * (MIN_BATCH_TOKEN_BYTES + 3);
    assert!(body <= d.server.limits.max_body_bytes, "{body}");
    assert!(body + MIN_BATCH_TOKEN_BYTES + 3 > d.server.limits.max_body_bytes);
    d.validate().unwrap();
    // Unset, it is derived from the body limit: smaller, larger (capped), tiny.
    let derived = |body: usize| {
        let text = format!("[server]\nmax_body_bytes = {body}\n");
        let c = Config::from_toml(&text, Path::new(".")).unwrap();
        c.validate().unwrap();
        c.auth.max_batch_tokens
    };
    assert_eq!(derived(4096), 11);
    assert_eq!(derived(64 << 20), MAX_BATCH_TOKENS_DEFAULT);
    assert_eq!(derived(0), 1);
    // Set above what fits: refused, naming both keys and the largest that fits.
    let c = Config::from_toml("[auth]\nmax_batch_tokens = 4096\n", Path::new(".")).unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("auth.max_batch_tokens = 4096 cannot be reached"),
        "{err}"
    );
    assert!(err.contains("server.max_body_bytes = 1048576"), "{err}");
    assert!(err.contains("at most 3021"), "{err}");
    // Raising the body limit makes room for it; a smaller batch always fits.
    let text = "[server]\nmax_body_bytes = 2097152\n[auth]\nmax_batch_tokens = 4096\n";
    Config::from_toml(text, Path::new("."))
        .unwrap()
        .validate()
        .unwrap();
    let text = "[auth]\nmax_batch_tokens = 3021\n";
    Config::from_toml(text, Path::new("."))
        .unwrap()
        .validate()
        .unwrap();
}

#[test]
fn limits_are_checked() {
    let c = Config::from_toml("[server]\nrecv_buffer_count = 100\n", Path::new(".")).unwrap();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("power of two"));
    assert!(Shards::parse("0").is_err());
    assert!(Shards::parse("many").is_err());
}

#[test]
fn gate_keys_land_on_the_gate_defaults_and_are_range_checked() {
    let c = Config::from_toml("[gate]\npkt_rate_per_s = 5000\n", Path::new("/srv")).unwrap();
    c.validate().unwrap();
    let d = GateConfig::default();
    assert_eq!(
        (c.gate.pkt_rate_per_s, c.gate.pkt_burst),
        (5000, 10_000),
        "burst follows rate"
    );
    assert_eq!(
        (c.gate.syn_rate_per_s, c.gate.syn_burst),
        (d.syn_rate_per_s, d.syn_burst)
    );
    assert_eq!(c.gate.data_dir, c.server.data_dir);
    let c = Config::from_toml(
        "[gate]\nsyn_rate_per_s = 50\nsyn_burst = 7\n",
        Path::new("."),
    )
    .unwrap();
    assert_eq!((c.gate.syn_rate_per_s, c.gate.syn_burst), (50, 7));
    for (text, key) in [
        ("[gate]\nsyn_rate_per_s = 0\n", "gate.syn_rate_per_s"),
        ("[gate]\nsyn_burst = 0\n", "gate.syn_burst"),
        (
            "[gate]\npkt_rate_per_s = 10\npkt_burst = 0\n",
            "gate.pkt_burst",
        ),
        ("[gate]\nblock_ttl_s = 0\n", "gate.block_ttl_s"),
        (
            "[gate]\nxdp = [\"a-very-long-interface-name\"]\n",
            "gate.xdp",
        ),
        ("[gate]\nxdp = [\"../eth0\"]\n", "gate.xdp"),
    ] {
        let err = Config::from_toml(text, Path::new("."))
            .and_then(|c| c.validate().map(|()| c))
            .err()
            .unwrap_or_else(|| panic!("{text:?} was accepted"));
        assert!(err.to_string().contains(key), "{text:?}: {err}");
    }
}

#[test]
fn pool_settings_the_pool_would_refuse_are_config_errors() {
    for (text, key) in [
        ("[pool]\nfreshness_s = 0\n", "pool.freshness_s"),
        ("[pool]\nmax_per_key = 0\n", "pool.max_per_key"),
        (
            "[pool]\nmax_per_key = 300\nmax_total = 200\n",
            "pool.max_total",
        ),
    ] {
        let config = Config::from_toml(text, Path::new(".")).unwrap();
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains(key), "{text:?}: {err}");
    }
}

#[test]
fn listen_takes_a_list_with_a_unix_socket_mode_and_group() {
    let c = Config::from_toml(
        "[server]\nlisten = [\"127.0.0.1:9000\", \"unix:/run/sz/s.sock\"]\nunix_mode = \"0600\"\nunix_group = \"www-data\"\n",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:9000".parse().unwrap()));
    assert_eq!(
        c.server.unix_socket.as_deref(),
        Some(Path::new("/run/sz/s.sock"))
    );
    assert_eq!(c.server.unix_mode, 0o600);
    assert_eq!(c.server.unix_group.as_deref(), Some("www-data"));
    let one =
        Config::from_toml("[server]\nlisten = \"unix:/tmp/x.sock\"\n", Path::new(".")).unwrap();
    assert_eq!(
        one.server.unix_socket.as_deref(),
        Some(Path::new("/tmp/x.sock"))
    );
    assert_eq!(one.server.unix_mode, 0o660);
    assert_eq!(one.server.listen, None, "unix: only means no TCP listener");
    assert_eq!(one.public_url(), "http://localhost");
    for bad in [
        "listen = []",
        "listen = [\"unix:/a\", \"unix:/b\"]",
        "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]",
        "listen = \"nope\"",
        "listen = 5",
        "unix_mode = \"999\"",
    ] {
        let text = format!("[server]\n{bad}\n");
        assert!(Config::from_toml(&text, Path::new(".")).is_err(), "{bad}");
    }
}

#[test]
fn listen_flags_replace_the_files_whole_list() {
    let dir = std::env::temp_dir().join(format!("sz-cfg-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sz.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = [\"127.0.0.1:9000\", \"unix:/run/sz/file.sock\"]\n",
    )
    .unwrap();
    let unix_only = Overrides {
        listen: vec!["unix:/run/sz/flag.sock".into()],
        ..Overrides::default()
    };
    let c = Config::load(Some(&file), &unix_only).unwrap();
    assert_eq!(
        c.server.listen, None,
        "no TCP: the file's 127.0.0.1:9000 is replaced"
    );
    assert_eq!(
        c.server.unix_socket.as_deref(),
        Some(Path::new("/run/sz/flag.sock"))
    );
    let tcp_only = Overrides {
        listen: vec!["127.0.0.1:9001".into()],
        ..Overrides::default()
    };
    let c = Config::load(Some(&file), &tcp_only).unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:9001".parse().unwrap()));
    assert_eq!(
        c.server.unix_socket, None,
        "the file's unix: entry is replaced too"
    );
    let c = Config::load(Some(&file), &Overrides::default()).unwrap();
    assert_eq!(c.server.listen, Some("127.0.0.1:9000".parse().unwrap()));
    assert!(c.server.unix_socket.is_some());
}
