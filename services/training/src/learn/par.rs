//! Deterministic data parallelism over rows, and the small vector kernels the learners share.
//!
//! The rows are cut into chunks whose boundaries depend only on the row count and the accumulator width,
//! never on the number of threads; each chunk accumulates into its own buffer and the buffers are added in
//! chunk order. So a fit gives the same bits on a laptop and on a 64-core node.

use std::num::NonZeroUsize;

/// Rows per chunk at least (below this a thread is not worth starting).
const MIN_CHUNK_ROWS: usize = 2048;
/// Chunks at most.
const MAX_CHUNKS: usize = 64;
/// Values held by all chunk accumulators together at most (64 MiB).
const PARTIALS_BUDGET: usize = 1 << 23;

/// Threads the machine (or its CPU quota) offers.
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Sums `width` accumulators over the rows `0..n`: `kernel(start, end, acc)` adds the rows `start..end`
/// into `acc` (zeroed, length `width`). The result, in `out`, does not depend on the thread count.
/// `partials` is scratch space reused between calls.
pub(crate) fn sum_rows<K>(n: usize, width: usize, partials: &mut Vec<f64>, out: &mut [f64], kernel: K)
where
    K: Fn(usize, usize, &mut [f64]) + Sync,
{
    out.fill(0.0);
    if width == 0 {
        return;
    }
    let max_chunks = (PARTIALS_BUDGET / width).clamp(1, MAX_CHUNKS);
    let n_chunks = n.div_ceil(MIN_CHUNK_ROWS).clamp(1, max_chunks);
    let bound = move |c: usize| c * n / n_chunks;
    partials.clear();
    partials.resize(n_chunks * width, 0.0);
    let threads = threads().min(n_chunks);
    if threads <= 1 {
        for (c, acc) in partials.chunks_exact_mut(width).enumerate() {
            kernel(bound(c), bound(c + 1), acc);
        }
    } else {
        let per_thread = n_chunks.div_ceil(threads);
        let kernel = &kernel;
        std::thread::scope(|s| {
            for (t, group) in partials.chunks_mut(per_thread * width).enumerate() {
                s.spawn(move || {
                    for (k, acc) in group.chunks_exact_mut(width).enumerate() {
                        let c = t * per_thread + k;
                        kernel(bound(c), bound(c + 1), acc);
                    }
                });
            }
        });
    }
    for acc in partials.chunks_exact(width) {
        for (o, a) in out.iter_mut().zip(acc) {
            *o += a;
        }
    }
}

/// `a . b` with four independent partial sums, so LLVM can keep them in vector registers.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// `y += a x`.
#[inline]
pub(crate) fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_do_not_depend_on_the_chunking_of_threads() {
        let n = 10_000;
        let data: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 1e3).collect();
        let mut partials = Vec::new();
        let mut out = vec![0.0; 2];
        let kernel = |s: usize, e: usize, acc: &mut [f64]| {
            for v in &data[s..e] {
                acc[0] += v;
                acc[1] += v * v;
            }
        };
        sum_rows(n, 2, &mut partials, &mut out, kernel);
        // The same fixed chunks summed serially.
        let n_chunks = n.div_ceil(MIN_CHUNK_ROWS);
        let mut expect = [0.0; 2];
        for c in 0..n_chunks {
            let mut acc = [0.0; 2];
            kernel(c * n / n_chunks, (c + 1) * n / n_chunks, &mut acc);
            expect[0] += acc[0];
            expect[1] += acc[1];
        }
        assert_eq!(out, expect);
        sum_rows(0, 2, &mut partials, &mut out, kernel);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn dot_handles_remainders() {
        let a: Vec<f64> = (0..11).map(f64::from).collect();
        assert_eq!(dot(&a, &a), (0..11).map(|i| f64::from(i * i)).sum::<f64>());
        assert_eq!(dot(&[], &[]), 0.0);
    }
}
