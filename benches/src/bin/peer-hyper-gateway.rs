//! The gateway a typical Rust team would write, as a peer for subzero's authenticate
//! scenarios: tokio (`current_thread`) + hyper 1 + `jsonwebtoken` (`EdDSA`) with a
//! `HashMap<String, Claims>` cache behind a mutex.
//!
//! `GET /v1/authenticate` checks `Authorization: Bearer T` (cache hit, else verify: `EdDSA`
//! signature, `exp`, `nbf`, `iss` = `aud` = "subzero"); `POST /v1/authenticate/batch`
//! verifies each of `{"tokens":[...]}`. Keys come from `--jwks`: a JWKS file, one JWK file, or
//! a subzero data dir (`keys/*.jwk.json`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// tokio + hyper + jsonwebtoken authentication gateway peer.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9002.
    #[arg(long)]
    listen: SocketAddr,
    /// Public keys: a JWKS file (`{"keys":[...]}`), one JWK file, or a subzero data dir.
    #[arg(long)]
    jwks: PathBuf,
}

/// Cached validated tokens at most; a full cache is cleared (what a quick implementation does).
const MAX_CACHE_ENTRIES: usize = 1_000_000;
/// Tokens per batch request at most.
const BATCH_TOKENS_MAX: usize = 1024;
/// Request body bytes at most.
const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Clock skew allowed on `exp` and `nbf`, as subzero's default.
const LEEWAY_S: u64 = 60;
const ISSUER: &str = "subzero";
const AUDIENCE: &str = "subzero";

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Claims {
    sub: String,
    iss: String,
    exp: u64,
    #[serde(default)]
    scope: String,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    all: Vec<DecodingKey>,
}

struct Gateway {
    keys: Keys,
    validation: Validation,
    cache: Mutex<HashMap<String, Claims>>,
}

fn load_jwk(value: &serde_json::Value, keys: &mut Keys) -> Result<(), String> {
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
        return Ok(()); // Not an Ed25519 key: this peer only speaks EdDSA.
    }
    let x = field("x").ok_or("Ed25519 JWK without \"x\"")?;
    let key = DecodingKey::from_ed_components(x).map_err(|e| format!("bad JWK x: {e}"))?;
    if let Some(kid) = field("kid") {
        keys.by_kid.insert(kid.to_owned(), key.clone());
    }
    keys.all.push(key);
    Ok(())
}

fn load_file(path: &Path, keys: &mut Keys) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match value.get("keys").and_then(serde_json::Value::as_array) {
        Some(jwks) => jwks.iter().try_for_each(|jwk| load_jwk(jwk, keys)),
        None => load_jwk(&value, keys),
    }
}

fn load_keys(path: &Path) -> Result<Keys, String> {
    let mut keys = Keys {
        by_kid: HashMap::new(),
        all: Vec::new(),
    };
    if path.is_dir() {
        for dir in [path.join("keys"), path.to_path_buf()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|file| file.to_string_lossy().ends_with(".jwk.json"))
                .collect();
            files.sort();
            for file in files {
                load_file(&file, &mut keys)?;
            }
        }
    } else {
        load_file(path, &mut keys)?;
    }
    if keys.all.is_empty() {
        return Err(format!("no Ed25519 public key found in {}", path.display()));
    }
    Ok(keys)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl Gateway {
    fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let decode = |key: &DecodingKey| {
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .ok()
                .map(|data| data.claims)
        };
        match header.kid {
            Some(kid) => decode(self.keys.by_kid.get(&kid)?),
            // No kid: try each key (a rotation keeps two).
            None => self.keys.all.iter().find_map(decode),
        }
    }

    fn authenticate(&self, token: &str) -> Option<Claims> {
        {
            let cache = self.cache.lock().ok()?;
            if let Some(claims) = cache.get(token) {
                if now_s() <= claims.exp.saturating_add(LEEWAY_S) {
                    return Some(claims.clone());
                }
            }
        }
        let claims = self.verify(token)?;
        let mut cache = self.cache.lock().ok()?;
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(token.to_owned(), claims.clone());
        Some(claims)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn unauthorized() -> Response<Full<Bytes>> {
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "invalid_token", "error_description": "token rejected"}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

fn authenticate(
    gateway: &Gateway,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(claims) = token.and_then(|token| gateway.authenticate(token.trim())) else {
        return unauthorized();
    };
    let (Ok(subject), Ok(scopes), Ok(issuer)) = (
        HeaderValue::from_str(&claims.sub),
        HeaderValue::from_str(&claims.scope),
        HeaderValue::from_str(&claims.iss),
    ) else {
        return unauthorized();
    };
    // An empty body, as subzero's: nginx's `auth_request` never reads a subrequest's body, so
    // an upstream answer with one cannot go back to the keep-alive pool (one connection per
    // check, which measured 3× the CPU per API request).
    let mut response = text(StatusCode::OK, "");
    let headers = response.headers_mut();
    headers.insert("x-auth-subject", subject);
    headers.insert("x-auth-scopes", scopes);
    headers.insert("x-auth-issuer", issuer);
    response
}

#[derive(Deserialize)]
struct BatchRequest {
    tokens: Vec<String>,
}

async fn authenticate_batch(
    gateway: &Gateway,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let bad_request = |description: &str| {
        json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "invalid_request", "error_description": description}),
        )
    };
    let Ok(body) = Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    else {
        return bad_request("body unreadable or too large");
    };
    let Ok(batch) = serde_json::from_slice::<BatchRequest>(&body.to_bytes()) else {
        return bad_request("expected {\"tokens\":[...]}");
    };
    if batch.tokens.len() > BATCH_TOKENS_MAX {
        return bad_request("too many tokens");
    }
    let results: Vec<serde_json::Value> = batch
        .tokens
        .iter()
        .map(|token| match gateway.verify(token) {
            Some(claims) => serde_json::json!({
                "valid": true, "sub": claims.sub, "iss": claims.iss,
                "scope": claims.scope, "exp": claims.exp,
            }),
            None => serde_json::json!({"valid": false, "error": "invalid_token"}),
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "results": results }))
}

async fn route(
    gateway: Arc<Gateway>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/v1/authenticate") => authenticate(&gateway, &request),
        (&Method::POST, "/v1/authenticate/batch") => authenticate_batch(&gateway, request).await,
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response)
}

async fn serve(listen: SocketAddr, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            let service = service_fn(move |request| route(Arc::clone(&gateway), request));
            let connection = http1::Builder::new()
                .keep_alive(true)
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = connection.await;
        });
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let keys = load_keys(&args.jwks).map_err(std::io::Error::other)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_S;
    let gateway = Arc::new(Gateway {
        keys,
        validation,
        cache: Mutex::new(HashMap::new()),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(serve(args.listen, gateway))
}
