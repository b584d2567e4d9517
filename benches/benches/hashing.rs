//! Batch hashing throughput per algorithm, batch size and input size.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use subzero::hashing::{hash_batch, HashAlg};
use subzero_benches::thread_cpu_time;

fn hashing(c: &mut Criterion) {
    for input_bytes in [64_usize, 1024, 4096] {
        for batch_len in [1_usize, 16, 256] {
            let owned: Vec<Vec<u8>> = (0..batch_len)
                .map(|i| (0..input_bytes).map(|j| (i * 7 + j) as u8).collect())
                .collect();
            let inputs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            let mut out = Vec::with_capacity(batch_len);
            let mut group = c.benchmark_group(format!("hash_batch/{input_bytes}B"));
            group.throughput(Throughput::Bytes((input_bytes * batch_len) as u64));
            for alg in HashAlg::ALL {
                group.bench_with_input(
                    BenchmarkId::new(alg.name(), format!("x{batch_len}")),
                    &inputs,
                    |b, inputs| {
                        b.iter_custom(|iters| {
                            let started = thread_cpu_time();
                            for _ in 0..iters {
                                hash_batch(alg, black_box(inputs), &mut out);
                                black_box(out.len());
                            }
                            thread_cpu_time().saturating_sub(started)
                        });
                    },
                );
            }
            group.finish();
        }
    }
}

criterion_group!(benches, hashing);
criterion_main!(benches);
