//! `subzero block add|del|list --server URL`: the blocklist edited through a running server's
//! `/v1/block` (over `unix:/path` an `[admin] unix_uids` uid needs no token; over
//! `http://host:port` the admin token is read from `--admin-token-file`).

use std::path::Path;

use super::remote::{self, Target};

/// Longest admin token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// `--server` and `--admin-token-file` of one `block` command.
pub struct Remote<'a> {
    /// `http://host:port` or `unix:/path`.
    pub server: &'a str,
    /// File holding the admin token (needed over TCP; optional over the Unix socket).
    pub admin_token_file: Option<&'a Path>,
}

fn read_token(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// One `/v1/block` request; the parsed JSON body of a 200, or the server's reason.
fn call(remote: &Remote<'_>, method: &str, body: &str) -> Result<serde_json::Value, String> {
    let target = Target::parse(remote.server)?;
    let token = remote.admin_token_file.map(read_token).transpose()?;
    let resp = remote::request(&target, method, "/v1/block", token.as_deref(), body)?;
    if resp.status != 200 {
        let hint = if resp.status == 401 && matches!(target, Target::Tcp(_)) {
            " (pass --admin-token-file, or use --server unix:/path as an [admin] unix_uids uid)"
        } else {
            ""
        };
        return Err(format!(
            "{target} answered {}: {}{hint}",
            resp.status,
            resp.description()
        ));
    }
    serde_json::from_str(&resp.body).map_err(|e| format!("{target}: the answer is not JSON: {e}"))
}

fn until_text(v: &serde_json::Value) -> String {
    match v.as_u64() {
        Some(s) => format!("until unix time {s}"),
        None => "until removed".to_owned(),
    }
}

/// `block add CIDR [--ttl-s N] [--reason R] --server URL`.
pub fn add(
    remote: &Remote<'_>,
    cidr: &str,
    ttl_s: Option<u64>,
    reason: &str,
) -> Result<(), String> {
    let body = serde_json::json!({ "cidr": cidr, "ttl_s": ttl_s.unwrap_or(0), "reason": reason });
    let v = call(remote, "POST", &body.to_string())?;
    println!(
        "blocked {} ({}) {}",
        v["cidr"].as_str().unwrap_or(cidr),
        v["reason"].as_str().unwrap_or(reason),
        until_text(&v["until_unix_s"])
    );
    Ok(())
}

/// `block del CIDR --server URL`.
pub fn del(remote: &Remote<'_>, cidr: &str) -> Result<(), String> {
    let v = call(
        remote,
        "DELETE",
        &serde_json::json!({ "cidr": cidr }).to_string(),
    )?;
    println!("unblocked {}", v["cidr"].as_str().unwrap_or(cidr));
    Ok(())
}

/// `block list [--json] --server URL`.
pub fn list(remote: &Remote<'_>, json: bool) -> Result<(), String> {
    let v = call(remote, "GET", "")?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        println!("blocklist is empty");
    }
    for e in &entries {
        println!(
            "{:<43} {:<10} {}",
            e["cidr"].as_str().unwrap_or("?"),
            e["reason"].as_str().unwrap_or("?"),
            until_text(&e["until_unix_s"])
        );
    }
    Ok(())
}
