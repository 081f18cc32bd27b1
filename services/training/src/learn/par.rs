//! Deterministic data parallelism over rows.
//!
//! The rows are cut into chunks whose boundaries depend only on the row count and the accumulator width,
//! never on the number of threads; each chunk accumulates into its own buffer and the buffers are added in
//! chunk order. So a fit gives the same bits on a laptop and on a 64-core node.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

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

/// How long an idle pool thread (or the caller waiting for its jobs) spins before it sleeps: minibatches
/// follow each other within microseconds, and a futex wake-up costs about as much as a small job.
const SPIN: Duration = Duration::from_micros(50);

/// Threads kept for a whole fit, so per-step work (an MLP minibatch: a few hundred microseconds) is worth
/// sharing: [`Pool::run`] hands out jobs `0..n` to whichever thread is free, the caller included. What
/// a job computes must depend on its index alone (never on the thread that runs it), so results do not
/// depend on the thread count or the scheduling.
pub(crate) struct Pool<'p, 'env> {
    shared: Option<&'p Shared<'env>>,
}

/// The jobs of one [`Pool::run`].
struct Batch<'env> {
    job: Box<dyn Fn(usize, usize) + Send + Sync + 'env>,
    jobs: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
}

struct Slot<'env> {
    generation: u64,
    batch: Option<Arc<Batch<'env>>>,
    sleeping: usize,
    quit: bool,
}

struct Shared<'env> {
    slot: Mutex<Slot<'env>>,
    /// `slot.generation`, readable without the lock (for spinning).
    generation: AtomicU64,
    wake: Condvar,
    finished: Condvar,
}

/// Spins until `ready()` or for [`SPIN`], whichever comes first.
fn spin_until(ready: impl Fn() -> bool) {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= SPIN {
            return;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` with a pool of `threads` threads (the caller and `threads - 1` more, which end with `f`).
pub(crate) fn with_pool<'env, R>(threads: usize, f: impl FnOnce(&Pool<'_, 'env>) -> R) -> R {
    if threads <= 1 {
        return f(&Pool { shared: None });
    }
    let shared = Shared {
        slot: Mutex::new(Slot { generation: 0, batch: None, sleeping: 0, quit: false }),
        generation: AtomicU64::new(0),
        wake: Condvar::new(),
        finished: Condvar::new(),
    };
    /// Stops the workers when `f` returns or panics.
    struct Quit<'a, 'env>(&'a Shared<'env>);
    impl Drop for Quit<'_, '_> {
        fn drop(&mut self) {
            lock(&self.0.slot).quit = true;
            self.0.wake.notify_all();
        }
    }
    std::thread::scope(|scope| {
        for worker in 1..threads {
            let shared = &shared;
            scope.spawn(move || shared.work(worker));
        }
        let _quit = Quit(&shared);
        f(&Pool { shared: Some(&shared) })
    })
}

impl<'env> Pool<'_, 'env> {
    /// Calls `job(i, worker)` once for each `i` in `0..jobs`, spread over the pool's threads, and
    /// returns when all have finished. `worker` (below the pool's thread count) identifies the thread,
    /// for scratch space: no two jobs run on the same `worker` at once.
    pub(crate) fn run(&self, jobs: usize, job: impl Fn(usize, usize) + Send + Sync + 'env) {
        let Some(shared) = self.shared.filter(|_| jobs > 1) else {
            for i in 0..jobs {
                job(i, 0);
            }
            return;
        };
        let batch = Arc::new(Batch {
            job: Box::new(job),
            jobs,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        });
        let sleeping = {
            let mut slot = lock(&shared.slot);
            slot.generation += 1;
            slot.batch = Some(Arc::clone(&batch));
            shared.generation.store(slot.generation, Ordering::Release);
            slot.sleeping
        };
        if sleeping > 0 {
            shared.wake.notify_all();
        }
        batch.help(0, shared);
        spin_until(|| batch.done.load(Ordering::Acquire) >= jobs);
        let mut slot = lock(&shared.slot);
        while batch.done.load(Ordering::Acquire) < jobs {
            slot = shared.finished.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
        drop(slot);
        assert!(!batch.panicked.load(Ordering::Relaxed), "a job of the thread pool panicked");
    }
}

impl Shared<'_> {
    fn work(&self, worker: usize) {
        let mut seen = 0;
        loop {
            spin_until(|| self.generation.load(Ordering::Acquire) != seen);
            let batch = {
                let mut slot = lock(&self.slot);
                while slot.generation == seen && !slot.quit {
                    slot.sleeping += 1;
                    slot = self.wake.wait(slot).unwrap_or_else(PoisonError::into_inner);
                    slot.sleeping -= 1;
                }
                if slot.quit {
                    return;
                }
                seen = slot.generation;
                slot.batch.clone()
            };
            if let Some(batch) = batch {
                batch.help(worker, self);
            }
        }
    }
}

impl<'env> Batch<'env> {
    /// Runs jobs until none is left.
    fn help(&self, worker: usize, shared: &Shared<'env>) {
        /// Counts a job as done even when it panics, so the caller does not wait forever.
        struct Done<'a, 'b, 'env>(&'a Batch<'env>, &'b Shared<'env>);
        impl Drop for Done<'_, '_, '_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.panicked.store(true, Ordering::Relaxed);
                }
                if self.0.done.fetch_add(1, Ordering::AcqRel) + 1 == self.0.jobs {
                    let _slot = lock(&self.1.slot);
                    self.1.finished.notify_all();
                }
            }
        }
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.jobs {
                return;
            }
            let _done = Done(self, shared);
            (self.job)(i, worker);
        }
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
}
