//! App↔agent channels end to end, on two shards: the two channel tokens carry `xaa:callback`
//! and the channel id and authenticate everywhere; deleting the channel revokes both on every
//! shard before the answer, and they stay refused after `kill -9` and a restart.

mod common;

use common::{bearer, issue, Server};

fn start(dir: &std::path::Path) -> Server {
    Server::start(dir, &["--shards", "2"])
}

/// Status of `GET /v1/authenticate` with `token` on `n` fresh connections (both shards).
fn statuses(server: &Server, token: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| {
            server
                .request(
                    "GET",
                    "/v1/authenticate",
                    &[("Authorization", &bearer(token))],
                    "",
                )
                .status
        })
        .collect()
}

#[test]
fn a_channel_is_two_tokens_revocable_as_a_unit_everywhere_and_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let app = issue(dir.path(), "app-1", "subzero", &["read"]);
    let agent = issue(dir.path(), "agent-7", "subzero", &["read"]);
    let body = serde_json::json!({ "agent_token": agent }).to_string();
    let resp = server.request(
        "POST",
        "/v1/xaa/channel",
        &[("Authorization", &bearer(&app))],
        &body,
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let json = resp.json();
    let id = json["channel_id"].as_str().expect("channel_id").to_owned();
    let app_cb = json["app_token"].as_str().expect("app_token").to_owned();
    let agent_cb = json["agent_token"]
        .as_str()
        .expect("agent_token")
        .to_owned();
    for (token, sub) in [(&app_cb, "app-1"), (&agent_cb, "agent-7")] {
        let claims = common::token_part(token, 1);
        assert_eq!(claims["sub"], sub);
        assert_eq!(claims["scope"], "xaa:callback");
        assert_eq!(claims["cid"], id.as_str());
        assert!(statuses(&server, token, 8).iter().all(|&s| s == 200));
    }
    // Only a token of this channel (or the admin) may delete it.
    let resp = server.request(
        "DELETE",
        &format!("/v1/xaa/channel/{id}"),
        &[("Authorization", &bearer(&app))],
        "",
    );
    assert_eq!(resp.status, 403, "{}", resp.body);
    let resp = server.request(
        "DELETE",
        &format!("/v1/xaa/channel/{id}"),
        &[("Authorization", &bearer(&app_cb))],
        "",
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    // Refused on every connection at once: the revocation reached every shard before the 200.
    for token in [&app_cb, &agent_cb] {
        assert!(
            statuses(&server, token, 16).iter().all(|&s| s == 401),
            "still accepted"
        );
    }
    // The parties' own tokens are untouched.
    assert!(statuses(&server, &app, 4).iter().all(|&s| s == 200));
    let again = server.request(
        "DELETE",
        &format!("/v1/xaa/channel/{id}"),
        &[("Authorization", &bearer(&app))],
        "",
    );
    assert!(again.status == 401 || again.status == 403 || again.status == 404);
    server.kill9();
    let server = start(dir.path());
    for token in [&app_cb, &agent_cb] {
        assert!(
            statuses(&server, token, 8).iter().all(|&s| s == 401),
            "accepted after restart"
        );
    }
}

#[test]
fn a_channel_needs_two_valid_different_parties() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let app = issue(dir.path(), "app-1", "subzero", &[]);
    let body = serde_json::json!({ "agent_token": app }).to_string();
    let resp = server.request(
        "POST",
        "/v1/xaa/channel",
        &[("Authorization", &bearer(&app))],
        &body,
    );
    assert_eq!(resp.status, 400, "{}", resp.body);
    let forged = format!("{}x", &app[..app.len() - 1]);
    let body = serde_json::json!({ "agent_token": forged }).to_string();
    let resp = server.request(
        "POST",
        "/v1/xaa/channel",
        &[("Authorization", &bearer(&app))],
        &body,
    );
    assert_eq!(resp.status, 401, "{}", resp.body);
    let resp = server.request(
        "DELETE",
        "/v1/xaa/channel/nosuchchannel",
        &[("Authorization", &bearer(&app))],
        "",
    );
    assert_eq!(resp.status, 403, "{}", resp.body);
}
