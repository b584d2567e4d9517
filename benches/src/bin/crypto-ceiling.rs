//! The crypto ceiling: raw `ed25519-dalek` 2 on one core (the xtask pins it), so the report can
//! say how close a cold-verify scenario gets to the cost of the signature check alone.
//! Prints one JSON line: `{"mode":..,"ops_per_s":..,"us_per_op":..}` (ops are signatures;
//! both per CPU-second of this thread, so other load on the machine does not skew them).

use std::hint::black_box;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use subzero_benches::thread_cpu_time;

/// Raw Ed25519 throughput on one core.
#[derive(Parser, Debug)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Signatures per batch for `verify-batch`.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// How long to run.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Sign,
    Verify,
    VerifyStrict,
    VerifyBatch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sign => "sign",
            Mode::Verify => "verify",
            Mode::VerifyStrict => "verify-strict",
            Mode::VerifyBatch => "verify-batch",
        }
    }
}

const SECONDS_MAX: u64 = 600;
const BATCH_MAX: usize = 4096;
/// Operations between clock reads for the one-at-a-time modes.
const OPS_PER_CLOCK_READ: u64 = 64;

/// A JWS signing input shaped like subzero's tokens (header.payload, base64url), `idx` making
/// each distinct.
fn signing_input(idx: usize) -> Vec<u8> {
    format!(
        "eyJhbGciOiJFZERTQSIsImNydiI6IkVkMjU1MTkiLCJraWQiOiJrMSIsInR5cCI6IkpXVCJ9.\
         eyJpc3MiOiJzdWJ6ZXJvIiwic3ViIjoidXNlci0{idx:08}IiwiYXVkIjoic3ViemVybyIsImV4cCI6MTc2NzIyNTYwMCwibmJmIjoxNzY3MjIyMDAwLCJpYXQiOjE3NjcyMjIwMDAsImp0aSI6IjAxSEZaIiwic2NvcGUiOiJyZWFkIHdyaXRlIn0"
    )
    .into_bytes()
}

/// Runs `op` (which does `ops_per_call` signatures) until `duration` of wall time passes;
/// returns (signatures, CPU time used, wall time).
fn run(
    duration: Duration,
    ops_per_call: u64,
    calls_per_clock_read: u64,
    mut op: impl FnMut(usize) -> bool,
) -> Result<(u64, Duration, Duration), String> {
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut n_ops = 0_u64;
    let mut idx = 0_usize;
    loop {
        for _ in 0..calls_per_clock_read {
            if !black_box(op(idx)) {
                return Err("a valid signature failed to verify".into());
            }
            idx = idx.wrapping_add(1);
            n_ops += ops_per_call;
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok((n_ops, thread_cpu_time().saturating_sub(cpu_start), elapsed));
        }
    }
}

fn measure(args: &Args) -> Result<serde_json::Value, String> {
    if !(1..=SECONDS_MAX).contains(&args.seconds) {
        return Err(format!("--seconds must be in 1..={SECONDS_MAX}"));
    }
    if !(1..=BATCH_MAX).contains(&args.batch) {
        return Err(format!("--batch must be in 1..={BATCH_MAX}"));
    }
    let signing_key = SigningKey::generate(&mut rand::rngs::OsRng);
    let verifying_key: VerifyingKey = signing_key.verifying_key();
    // Enough distinct messages that nothing is trivially cached.
    let n_messages = args.batch.max(256);
    let messages: Vec<Vec<u8>> = (0..n_messages).map(signing_input).collect();
    let signatures: Vec<Signature> = messages.iter().map(|m| signing_key.sign(m)).collect();
    let duration = Duration::from_secs(args.seconds);
    let (n_ops, cpu, wall) = match args.mode {
        Mode::Sign => run(duration, 1, OPS_PER_CLOCK_READ, |idx| {
            black_box(signing_key.sign(&messages[idx % n_messages]));
            true
        })?,
        Mode::Verify => run(duration, 1, OPS_PER_CLOCK_READ, |idx| {
            let idx = idx % n_messages;
            verifying_key
                .verify(&messages[idx], &signatures[idx])
                .is_ok()
        })?,
        Mode::VerifyStrict => run(duration, 1, OPS_PER_CLOCK_READ, |idx| {
            let idx = idx % n_messages;
            verifying_key
                .verify_strict(&messages[idx], &signatures[idx])
                .is_ok()
        })?,
        Mode::VerifyBatch => {
            let batch = args.batch;
            let message_refs: Vec<&[u8]> = messages[..batch].iter().map(Vec::as_slice).collect();
            let keys = vec![verifying_key; batch];
            run(duration, batch as u64, 1, |_| {
                ed25519_dalek::verify_batch(&message_refs, &signatures[..batch], &keys).is_ok()
            })?
        }
    };
    let cpu_s = cpu.as_secs_f64().max(1e-9);
    Ok(serde_json::json!({
        "mode": args.mode.name(),
        "ops_per_s": n_ops as f64 / cpu_s,
        "us_per_op": cpu_s * 1e6 / n_ops as f64,
        "ops": n_ops,
        "cpu_s": cpu_s,
        "wall_s": wall.as_secs_f64(),
        "batch": if matches!(args.mode, Mode::VerifyBatch) { args.batch } else { 1 },
    }))
}

fn main() {
    let args = Args::parse();
    match measure(&args) {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("crypto-ceiling: {error}");
            std::process::exit(2);
        }
    }
}
