//! A multilayer perceptron trained like scikit-learn's `MLPClassifier` / `MLPRegressor` with
//! `activation="relu"`, `solver="adam"`, `early_stopping=True`, `validation_fraction=0.1`: Glorot-uniform
//! initialization, shuffled minibatches every epoch, Adam, an L2 penalty `alpha/2 ||W||² / batch rows`,
//! and early stopping on the validation score (accuracy, or R² for a numeric target), keeping the
//! best weights.

use super::par::{self, Pool};
use super::{Fit, FitError, Target};
use crate::matrix::MatrixView;
use crate::network::{Dense, Head, Network, sigmoid, softmax_into};
use crate::vector::{axpy, dot};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;
const VALIDATION_FRACTION: f64 = 0.1;
/// Weights and biases at most (Adam keeps four more copies, early stopping one).
const MAX_PARAMETERS: usize = 1 << 24;
/// Activations of a minibatch (or a validation block) at most, all layers together.
const MAX_ACTIVATIONS: usize = 1 << 25;
/// Validation rows per forward pass.
const SCORE_BLOCK: usize = 512;
/// Minibatch rows per chunk at least: a minibatch is cut into chunks of about equal size (their number
/// set by the batch size alone), each with its own gradient sums, added in chunk order.
const CHUNK_ROWS: usize = 50;
/// Chunks per minibatch at most.
const MAX_CHUNKS: usize = 16;
/// Gradient values held by all chunks together at most.
const PARTIALS_BUDGET: usize = 1 << 23;
/// Minibatch rows x parameters below which the fit runs on one thread.
const PARALLEL_WORK: usize = 1 << 16;

#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub hidden: Vec<usize>,
    pub alpha: f64,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub max_epochs: u32,
    pub patience: u32,
    pub tolerance: f64,
    pub seed: u64,
}

#[derive(Clone, Copy)]
enum Task<'a> {
    /// One logistic output: P(class 1).
    Binary(&'a [u32]),
    /// One softmax output per class.
    Multiclass(&'a [u32], usize),
    Regression(&'a [f64]),
}

impl Task<'_> {
    fn outputs(&self) -> usize {
        match self {
            Task::Binary(_) | Task::Regression(_) => 1,
            Task::Multiclass(_, k) => *k,
        }
    }

    fn head(&self) -> Head {
        match self {
            Task::Binary(_) => Head::Logistic,
            Task::Multiclass(..) => Head::Softmax,
            Task::Regression(_) => Head::Identity,
        }
    }
}

pub(super) fn fit(x: MatrixView<'_>, target: Target<'_>, s: &Settings) -> Result<Fit, FitError> {
    fit_with_threads(x, target, s, par::threads())
}

/// [`fit`] on at most `threads` threads; the result is the same for any number.
fn fit_with_threads(
    x: MatrixView<'_>,
    target: Target<'_>,
    s: &Settings,
    threads: usize,
) -> Result<Fit, FitError> {
    let task = match target {
        Target::Classes { y, n_classes: 2 } => Task::Binary(y),
        Target::Classes { y, n_classes } => Task::Multiclass(y, n_classes),
        Target::Values(y) => Task::Regression(y),
    };
    let n = x.rows;
    let mut sizes = vec![x.cols];
    sizes.extend(&s.hidden);
    sizes.push(task.outputs());
    let mut parameters = 0usize;
    for pair in sizes.windows(2) {
        parameters = pair[0]
            .checked_mul(pair[1])
            .and_then(|w| w.checked_add(pair[1]))
            .and_then(|p| p.checked_add(parameters))
            .filter(|&p| p <= MAX_PARAMETERS)
            .ok_or_else(|| FitError::InvalidHyperparameter {
                name: "hiddenLayers",
                message: format!(
                    "a network of layer sizes {sizes:?} has more than {MAX_PARAMETERS} parameters"
                ),
            })?;
    }

    let units: usize = sizes[1..].iter().sum();
    let batch_rows = s.batch_size.clamp(1, n).max(SCORE_BLOCK);
    if units.checked_mul(batch_rows).is_none_or(|a| a > MAX_ACTIVATIONS) {
        return Err(FitError::InvalidHyperparameter {
            name: "batchSize",
            message: format!(
                "a minibatch of {batch_rows} rows through layers {sizes:?} holds more than {MAX_ACTIVATIONS} \
                 activations; use smaller batches or layers"
            ),
        });
    }

    let mut rng = StdRng::seed_from_u64(s.seed);
    // Glorot-uniform weights and biases, layer by layer, as scikit-learn draws them (factor 6 for relu).
    let layers: Vec<Dense> = sizes
        .windows(2)
        .map(|pair| {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            let weights = (0..fan_in * fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            let bias = (0..fan_out).map(|_| rng.random_range(-bound..bound)).collect();
            Dense { inputs: fan_in, outputs: fan_out, weights, bias }
        })
        .collect();

    let n_val = (VALIDATION_FRACTION * n as f64).ceil() as usize;
    if n_val < 2 || n_val >= n {
        return Err(FitError::InvalidData(format!(
            "mlp holds out {:.0}% of the training rows for early stopping and needs at least 2 there: got {n} \
             rows, need at least 11",
            VALIDATION_FRACTION * 100.0
        )));
    }
    let (train, val) = match task {
        // scikit-learn stratifies the validation split only for a single output column (binary).
        Task::Binary(y) => stratified_split(y, 2, n_val, &mut rng),
        _ => {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(&mut rng);
            let train = all.split_off(n_val);
            (train, all)
        }
    };
    let x_val: Vec<f64> = val.iter().flat_map(|&i| x.row(i).iter().copied()).collect();
    let x_val = MatrixView { rows: val.len(), cols: x.cols, data: &x_val };

    let n_train = train.len();
    let batch = s.batch_size.clamp(1, n_train);
    let head = task.head();
    let mut best_layers = layers.clone();
    let shared = Shared::new(layers, batch);
    // Threads only pay off when a minibatch holds enough work, and more than its chunks would idle; the
    // result is the same on any number.
    let threads = if batch.saturating_mul(parameters) < PARALLEL_WORK {
        1
    } else {
        threads.clamp(1, shared.chunks.len())
    };
    let scorer = Scorer::new(&best_layers, head, val.len(), threads);
    let mut trainer = Trainer::new(&shared, head);
    let mut order: Vec<usize> = (0..n_train).collect();
    let mut rows = Vec::with_capacity(batch);
    let mut best_score = f64::NEG_INFINITY;
    let mut no_improvement = 0u32;
    let mut epochs = 0u32;
    let mut loss = f64::NAN;
    let mut stopped_early = false;

    par::with_pool(threads, |pool| {
        while epochs < s.max_epochs {
            order.shuffle(&mut rng);
            let mut accumulated = 0.0;
            for batch_order in order.chunks(batch) {
                rows.clear();
                rows.extend(batch_order.iter().map(|&r| train[r]));
                let batch_loss = trainer.step(pool, &shared, &rows, x, task, s);
                accumulated += batch_loss * rows.len() as f64;
            }
            epochs += 1;
            loss = accumulated / n_train as f64;
            if !loss.is_finite() {
                return Err(FitError::Diverged(format!(
                    "mlp: the training loss became non-finite in epoch {epochs}; try a smaller learningRate"
                )));
            }
            let score = scorer.score(pool, &shared.weights, x_val, &val, task);
            if score < best_score + s.tolerance {
                no_improvement += 1;
            } else {
                no_improvement = 0;
            }
            if score > best_score {
                best_score = score;
                best_layers.clone_from(&read(&shared.weights).layers);
            }
            if no_improvement > s.patience {
                stopped_early = true;
                break;
            }
        }
        Ok(())
    })?;
    if best_score == f64::NEG_INFINITY {
        return Err(FitError::Diverged("mlp: the validation score is not a number".into()));
    }
    let output = best_layers.pop().expect("at least the output layer");
    let network = Network { hidden: best_layers, output, head: task.head() };
    Ok(Fit { network, iterations: epochs, converged: stopped_early, final_loss: loss })
}

/// Splits the rows into training and `n_val` validation rows with each class in proportion, like
/// scikit-learn's `StratifiedShuffleSplit` (largest remainders, ties to the lower class).
fn stratified_split(y: &[u32], n_classes: usize, n_val: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &c) in y.iter().enumerate() {
        by_class[c as usize].push(i);
    }
    let counts: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let n_train = y.len() - n_val;
    let train_counts = approximate_mode(&counts, n_train);
    let mut train = Vec::with_capacity(n_train);
    let mut val = Vec::with_capacity(n_val);
    for (mut rows, take) in by_class.into_iter().zip(train_counts) {
        rows.shuffle(rng);
        val.extend_from_slice(&rows[take..]);
        rows.truncate(take);
        train.extend(rows);
    }
    train.shuffle(rng);
    val.shuffle(rng);
    (train, val)
}

/// `draws` spread over the classes in proportion to `counts`: the floors, then one more to the classes
/// with the largest fractional parts.
fn approximate_mode(counts: &[usize], draws: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let exact: Vec<f64> = counts.iter().map(|&c| c as f64 * draws as f64 / total.max(1) as f64).collect();
    let mut out: Vec<usize> = exact.iter().zip(counts).map(|(e, &c)| (e.floor() as usize).min(c)).collect();
    let mut need = draws.saturating_sub(out.iter().sum());
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    while need > 0 {
        let before = need;
        for &c in &by_remainder {
            if need > 0 && out[c] < counts[c] {
                out[c] += 1;
                need -= 1;
            }
        }
        if need == before {
            break;
        }
    }
    out
}

/// The weights every job reads, and their transposes for the backward pass.
struct Weights {
    layers: Vec<Dense>,
    /// `transposed[l]`: layer `l`'s weights `[outputs x inputs]` (empty for the first layer, whose inputs
    /// need no deltas).
    transposed: Vec<Vec<f64>>,
}

impl Weights {
    fn new(layers: Vec<Dense>) -> Self {
        let transposed = layers.iter().map(|_| Vec::new()).collect();
        let mut w = Self { layers, transposed };
        w.transpose();
        w
    }

    fn transpose(&mut self) {
        for (layer, t) in self.layers.iter().zip(&mut self.transposed).skip(1) {
            t.resize(layer.weights.len(), 0.0);
            for (p, w_row) in layer.weights.chunks_exact(layer.outputs).enumerate() {
                for (j, &w) in w_row.iter().enumerate() {
                    t[j * layer.inputs + p] = w;
                }
            }
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `v[..n]`, growing `v` when it is shorter.
fn at_least(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// What the jobs of a minibatch share: the weights, and the state of each chunk of rows.
struct Shared {
    weights: RwLock<Weights>,
    chunks: Vec<Mutex<Chunk>>,
}

impl Shared {
    fn new(layers: Vec<Dense>, batch: usize) -> Self {
        let parameters: usize = layers.iter().map(|l| l.weights.len() + l.bias.len()).sum();
        let max_chunks = MAX_CHUNKS.min(PARTIALS_BUDGET / parameters.max(1)).max(1);
        let n_chunks = chunks_for(batch, max_chunks);
        let chunks = (0..n_chunks).map(|_| Mutex::new(Chunk::new(&layers))).collect();
        Self { weights: RwLock::new(Weights::new(layers)), chunks }
    }
}

/// The number of chunks a minibatch of `b` rows is cut into: a function of `b` (and of the network's
/// size, through `max_chunks`) alone, never of the thread count.
fn chunks_for(b: usize, max_chunks: usize) -> usize {
    (b / CHUNK_ROWS).clamp(1, max_chunks)
}

/// One chunk of a minibatch: its rows, their activations and deltas, and the gradient sums over them.
struct Chunk {
    /// The data rows.
    rows: Vec<usize>,
    input: Vec<f64>,
    /// Each layer's output (after ReLU, or after the head for the last).
    acts: Vec<Vec<f64>>,
    deltas: Vec<Vec<f64>>,
    /// Sums over the chunk's rows (no penalty, not divided by the batch size).
    grad_w: Vec<Vec<f64>>,
    grad_b: Vec<Vec<f64>>,
    /// Sum of the rows' losses.
    loss: f64,
    panel: Vec<f64>,
}

impl Chunk {
    fn new(layers: &[Dense]) -> Self {
        Self {
            rows: Vec::new(),
            input: Vec::new(),
            acts: vec![Vec::new(); layers.len()],
            deltas: vec![Vec::new(); layers.len()],
            grad_w: layers.iter().map(|l| vec![0.0; l.weights.len()]).collect(),
            grad_b: layers.iter().map(|l| vec![0.0; l.outputs]).collect(),
            loss: 0.0,
            panel: Vec::new(),
        }
    }

    /// Forward and backward pass over the chunk's rows.
    fn run(&mut self, w: &Weights, x: MatrixView<'_>, task: Task<'_>, head: Head) {
        let layers = &w.layers;
        let last = layers.len() - 1;
        let b = self.rows.len();
        let input = at_least(&mut self.input, b * x.cols);
        for (dst, &r) in input.chunks_exact_mut(x.cols.max(1)).zip(&self.rows) {
            dst.copy_from_slice(x.row(r));
        }
        forward(layers, &self.input[..b * x.cols], b, &mut self.acts, head, &mut self.panel);

        // Output deltas (prediction - target) and the loss.
        let k = layers[last].outputs;
        let out = &self.acts[last][..b * k];
        let delta = at_least(&mut self.deltas[last], b * k);
        let rows = &self.rows;
        let eps = f64::EPSILON;
        let mut loss = 0.0;
        match task {
            Task::Binary(y) => {
                for ((d, &p), &r) in delta.iter_mut().zip(out).zip(rows) {
                    let t = if y[r] == 1 { 1.0 } else { 0.0 };
                    *d = p - t;
                    let pc = p.clamp(eps, 1.0 - eps);
                    loss -= t * pc.ln() + (1.0 - t) * (1.0 - pc).ln();
                }
            }
            Task::Multiclass(y, _) => {
                for ((d, p), &r) in delta.chunks_exact_mut(k).zip(out.chunks_exact(k)).zip(rows) {
                    let c = y[r] as usize;
                    d.copy_from_slice(p);
                    d[c] -= 1.0;
                    loss -= p[c].clamp(eps, 1.0 - eps).ln();
                }
            }
            Task::Regression(y) => {
                for ((d, &p), &r) in delta.iter_mut().zip(out).zip(rows) {
                    let e = p - y[r];
                    *d = e;
                    loss += 0.5 * e * e;
                }
            }
        }
        self.loss = loss;

        // Backward: gradient sums of each layer, and the deltas of the layer below through ReLU.
        for l in (0..=last).rev() {
            let layer = &layers[l];
            let (inputs, outputs) = (layer.inputs, layer.outputs);
            let (below, above) = self.deltas.split_at_mut(l);
            let delta = &above[0][..b * outputs];
            let a_prev: &[f64] =
                if l == 0 { &self.input[..b * inputs] } else { &self.acts[l - 1][..b * inputs] };
            // grad_w[p][j] = sum over rows i of a_prev[i][p] * delta[i][j].
            gemm(inputs, outputs, b, a_prev, (1, inputs), delta, None, &mut self.grad_w[l], &mut self.panel);
            let gb = &mut self.grad_b[l];
            gb.fill(0.0);
            for d_row in delta.chunks_exact(outputs) {
                axpy(1.0, d_row, gb);
            }
            if l > 0 {
                let d_prev = at_least(&mut below[l - 1], b * inputs);
                gemm(
                    b,
                    inputs,
                    outputs,
                    delta,
                    (outputs, 1),
                    &w.transposed[l],
                    None,
                    d_prev,
                    &mut self.panel,
                );
                for (dp, &a) in d_prev.iter_mut().zip(a_prev) {
                    *dp = if a > 0.0 { *dp } else { 0.0 };
                }
            }
        }
    }
}

/// Adam's state; the summed gradient of the current minibatch.
struct Trainer {
    head: Head,
    grad_w: Vec<Vec<f64>>,
    grad_b: Vec<Vec<f64>>,
    m_w: Vec<Vec<f64>>,
    v_w: Vec<Vec<f64>>,
    m_b: Vec<Vec<f64>>,
    v_b: Vec<Vec<f64>>,
    max_chunks: usize,
    t: u64,
}

impl Trainer {
    fn new(shared: &Shared, head: Head) -> Self {
        let weights = read(&shared.weights);
        let layers = &weights.layers;
        let per_layer =
            |f: &dyn Fn(&Dense) -> usize| layers.iter().map(|l| vec![0.0; f(l)]).collect::<Vec<_>>();
        Self {
            head,
            grad_w: per_layer(&|l| l.weights.len()),
            grad_b: per_layer(&|l| l.outputs),
            m_w: per_layer(&|l| l.weights.len()),
            v_w: per_layer(&|l| l.weights.len()),
            m_b: per_layer(&|l| l.outputs),
            v_b: per_layer(&|l| l.outputs),
            max_chunks: shared.chunks.len(),
            t: 0,
        }
    }

    /// One Adam step on the data rows `rows`, cut into chunks that the pool's threads share; returns the
    /// batch's mean loss plus penalty, as scikit-learn's `_backprop` does. The chunks' gradient sums are
    /// added in chunk order, so the result does not depend on the threads.
    fn step<'env>(
        &mut self,
        pool: &Pool<'_, 'env>,
        shared: &'env Shared,
        rows: &[usize],
        x: MatrixView<'env>,
        task: Task<'env>,
        s: &Settings,
    ) -> f64 {
        let b = rows.len();
        // The chunks made for the full batch size suffice for any smaller batch.
        let n_chunks = chunks_for(b, self.max_chunks).min(shared.chunks.len());
        for (c, chunk) in shared.chunks[..n_chunks].iter().enumerate() {
            let mut chunk = lock(chunk);
            chunk.rows.clear();
            chunk.rows.extend_from_slice(&rows[c * b / n_chunks..(c + 1) * b / n_chunks]);
        }
        let head = self.head;
        pool.run(n_chunks, move |c, _| {
            let weights = read(&shared.weights);
            lock(&shared.chunks[c]).run(&weights, x, task, head);
        });

        let mut weights = write(&shared.weights);
        let mut loss = 0.0;
        for (c, chunk) in shared.chunks[..n_chunks].iter().enumerate() {
            let chunk = lock(chunk);
            let sums =
                self.grad_w.iter_mut().zip(&chunk.grad_w).chain(self.grad_b.iter_mut().zip(&chunk.grad_b));
            if c == 0 {
                loss = chunk.loss;
                for (total, part) in sums {
                    total.copy_from_slice(part);
                }
            } else {
                loss += chunk.loss;
                for (total, part) in sums {
                    axpy(1.0, part, total);
                }
            }
        }
        let squares: f64 = weights.layers.iter().map(|l| dot(&l.weights, &l.weights)).sum();
        let loss = loss / b as f64 + 0.5 * s.alpha * squares / b as f64;
        let inv_b = 1.0 / b as f64;
        for (gw, layer) in self.grad_w.iter_mut().zip(&weights.layers) {
            for (g, w) in gw.iter_mut().zip(&layer.weights) {
                *g = (*g + s.alpha * w) * inv_b;
            }
        }
        for gb in &mut self.grad_b {
            for g in gb.iter_mut() {
                *g *= inv_b;
            }
        }

        // Adam.
        self.t += 1;
        let t = self.t as f64;
        let step = s.learning_rate * (1.0 - BETA2.powf(t)).sqrt() / (1.0 - BETA1.powf(t));
        for (l, layer) in weights.layers.iter_mut().enumerate() {
            adam(&mut layer.weights, &self.grad_w[l], &mut self.m_w[l], &mut self.v_w[l], step);
            adam(&mut layer.bias, &self.grad_b[l], &mut self.m_b[l], &mut self.v_b[l], step);
        }
        weights.transpose();
        loss
    }
}

fn adam(params: &mut [f64], grad: &[f64], m: &mut [f64], v: &mut [f64], step: f64) {
    for (((p, g), m), v) in params.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        *p -= step * *m / (v.sqrt() + EPSILON);
    }
}

/// The forward pass of `b` rows: `acts[l]` gets layer `l`'s output (ReLU for hidden layers, the head's
/// probabilities or values for the last).
fn forward(
    layers: &[Dense],
    input: &[f64],
    b: usize,
    acts: &mut [Vec<f64>],
    head: Head,
    panel: &mut Vec<f64>,
) {
    let last = layers.len() - 1;
    for (l, layer) in layers.iter().enumerate() {
        let (done, rest) = acts.split_at_mut(l);
        let prev: &[f64] = if l == 0 { input } else { &done[l - 1][..b * layer.inputs] };
        let out = at_least(&mut rest[0], b * layer.outputs);
        let a = (layer.inputs, 1);
        gemm(b, layer.outputs, layer.inputs, prev, a, &layer.weights, Some(&layer.bias), out, panel);
        if l < last {
            for v in out.iter_mut() {
                *v = v.max(0.0);
            }
        }
    }
    let k = layers[last].outputs;
    let out = &mut acts[last][..b * k];
    match head {
        Head::Identity => {}
        Head::Logistic => {
            for v in out.iter_mut() {
                *v = sigmoid(*v);
            }
        }
        Head::Softmax => {
            let mut z = vec![0.0; k];
            for row in out.chunks_exact_mut(k) {
                z.copy_from_slice(row);
                softmax_into(&z, row);
            }
        }
    }
}

/// Rows per register block of [`gemm`].
const MR: usize = 4;
/// Columns per register block of [`gemm`].
const NR: usize = 4;
/// Rows per block of [`gemm`] when the output has fewer than `NR` columns.
const NARROW_ROWS: usize = 8;

/// `c = start + A B` with `A` an `m x depth` matrix read through strides, `A[i][s] = a[i * ai + s * as_]`
/// (`a_strides = (ai, as_)`), `B` row-major `depth x n`, `c` row-major `m x n`, and `start` the bias of
/// each column (or zero). Each sum runs over `s = 0, 1, ...` in order, exactly as the plain loop would
/// round it. Blocks of `MR x NR` sums stay in registers meanwhile, and `MR` rows of `A` at a time are
/// packed `s`-major into `panel`, each value twice (so that a pair of sums takes it with one load).
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    n: usize,
    depth: usize,
    a: &[f64],
    a_strides: (usize, usize),
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
    panel: &mut Vec<f64>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (ai, as_) = a_strides;
    let a = if depth == 0 { &a[..0] } else { &a[..(m - 1) * ai + (depth - 1) * as_ + 1] };
    let b = &b[..depth * n];
    let c = &mut c[..m * n];
    let bias = bias.map(|v| &v[..n]);
    match n {
        1 => return gemm_narrow::<1>(a, a_strides, b, bias, c),
        2 => return gemm_narrow::<2>(a, a_strides, b, bias, c),
        3 => return gemm_narrow::<3>(a, a_strides, b, bias, c),
        _ => {}
    }
    let panel = at_least(panel, 2 * MR * depth);
    for (i0, c_rows) in (0..m).step_by(MR).zip(c.chunks_mut(MR * n)) {
        let rows = c_rows.len() / n;
        let p = &mut panel[..2 * rows * depth];
        if as_ == 1 {
            for r in 0..rows {
                let a_row = &a[(i0 + r) * ai..][..depth];
                for (ps, &v) in p.chunks_exact_mut(2 * rows).zip(a_row) {
                    ps[2 * r] = v;
                    ps[2 * r + 1] = v;
                }
            }
        } else {
            for (s, ps) in p.chunks_exact_mut(2 * rows).enumerate() {
                for (r, pair) in ps.chunks_exact_mut(2).enumerate() {
                    pair.fill(a[(i0 + r) * ai + s * as_]);
                }
            }
        }
        match rows {
            4 => gemm_rows::<4, 8>(n, p, b, bias, c_rows),
            3 => gemm_rows::<3, 6>(n, p, b, bias, c_rows),
            2 => gemm_rows::<2, 4>(n, p, b, bias, c_rows),
            _ => gemm_rows::<1, 2>(n, p, b, bias, c_rows),
        }
    }
}

/// One panel of `R` rows (`R2 = 2 R` values per `s`) times all columns of `b`.
fn gemm_rows<const R: usize, const R2: usize>(
    n: usize,
    p: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let mut j = 0;
    while j + NR <= n {
        gemm_block::<R, R2, NR>(j, n, p, b, bias, c);
        j += NR;
    }
    match n - j {
        3 => gemm_block::<R, R2, 3>(j, n, p, b, bias, c),
        2 => gemm_block::<R, R2, 2>(j, n, p, b, bias, c),
        1 => gemm_block::<R, R2, 1>(j, n, p, b, bias, c),
        _ => {}
    }
}

#[inline(always)]
fn gemm_block<const R: usize, const R2: usize, const C: usize>(
    j: usize,
    n: usize,
    p: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let start: [f64; C] = match bias {
        Some(bias) => *bias[j..].first_chunk().expect("C bias values"),
        None => [0.0; C],
    };
    let mut acc = [start; R];
    for (ps, b_row) in p.as_chunks::<R2>().0.iter().zip(b.chunks_exact(n)) {
        let bs: &[f64; C] = b_row[j..].first_chunk().expect("C values");
        for (acc_row, x) in acc.iter_mut().zip(ps.as_chunks::<2>().0) {
            for (q, (sum, &w)) in acc_row.iter_mut().zip(bs).enumerate() {
                *sum += x[q % 2] * w;
            }
        }
    }
    for (c_row, acc_row) in c.chunks_exact_mut(n).zip(&acc) {
        c_row[j..j + C].copy_from_slice(acc_row);
    }
}

/// [`gemm`] for `C < NR` output columns: `NARROW_ROWS` rows at a time, read in place.
fn gemm_narrow<const C: usize>(
    a: &[f64],
    (ai, as_): (usize, usize),
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let start: [f64; C] = match bias {
        Some(bias) => *bias.first_chunk().expect("C bias values"),
        None => [0.0; C],
    };
    let (blocks, rest) = c.as_chunks_mut::<C>();
    for (i0, c_rows) in (0..blocks.len()).step_by(NARROW_ROWS).zip(blocks.chunks_mut(NARROW_ROWS)) {
        if c_rows.len() == NARROW_ROWS {
            let mut acc = [start; NARROW_ROWS];
            for (s, bs) in b.as_chunks::<C>().0.iter().enumerate() {
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let x = a[(i0 + r) * ai + s * as_];
                    for (sum, &w) in acc_row.iter_mut().zip(bs) {
                        *sum += x * w;
                    }
                }
            }
            c_rows.copy_from_slice(&acc);
        } else {
            for (r, c_row) in c_rows.iter_mut().enumerate() {
                let mut acc = start;
                for (s, bs) in b.as_chunks::<C>().0.iter().enumerate() {
                    let x = a[(i0 + r) * ai + s * as_];
                    for (sum, &w) in acc.iter_mut().zip(bs) {
                        *sum += x * w;
                    }
                }
                *c_row = acc;
            }
        }
    }
    debug_assert!(rest.is_empty());
}

type ScoreScratch = (Vec<Vec<f64>>, Vec<f64>);

/// Scores the validation rows in blocks shared by the pool's threads.
struct Scorer {
    head: Head,
    /// Per thread: activations of one block (per layer) and a packing panel.
    scratch: Vec<Mutex<ScoreScratch>>,
    /// Per block of validation rows: the network's outputs.
    blocks: Vec<Mutex<Vec<f64>>>,
}

impl Scorer {
    fn new(layers: &[Dense], head: Head, rows: usize, threads: usize) -> Self {
        let units: usize = layers.iter().map(|l| l.outputs).sum();
        let scratch = threads.min(MAX_ACTIVATIONS / (SCORE_BLOCK * units).max(1)).max(1);
        Self {
            head,
            scratch: (0..scratch).map(|_| Mutex::new((vec![Vec::new(); layers.len()], Vec::new()))).collect(),
            blocks: (0..rows.div_ceil(SCORE_BLOCK)).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Accuracy (classes) or R² (values) of the network on `x` (the data rows `rows`).
    fn score<'env>(
        &'env self,
        pool: &Pool<'_, 'env>,
        weights: &'env RwLock<Weights>,
        x: MatrixView<'env>,
        rows: &[usize],
        task: Task<'_>,
    ) -> f64 {
        let head = self.head;
        pool.run(self.blocks.len(), move |i, worker| {
            let (start, end) = (i * SCORE_BLOCK, ((i + 1) * SCORE_BLOCK).min(x.rows));
            let weights = read(weights);
            let layers = &weights.layers;
            let mut scratch = lock(&self.scratch[worker % self.scratch.len()]);
            let (acts, panel) = &mut *scratch;
            forward(layers, x.rows_slice(start, end).data, end - start, acts, head, panel);
            let k = layers[layers.len() - 1].outputs;
            let mut block = lock(&self.blocks[i]);
            block.clear();
            block.extend_from_slice(&acts[layers.len() - 1][..(end - start) * k]);
        });
        let k = read(weights).layers.last().map_or(1, |l| l.outputs);
        let mut p = Vec::with_capacity(rows.len() * k);
        for block in &self.blocks {
            p.extend_from_slice(&lock(block));
        }
        match task {
            Task::Binary(y) => {
                let hits = rows.iter().zip(&p).filter(|&(&r, &p)| (p > 0.5) == (y[r] == 1)).count();
                hits as f64 / rows.len() as f64
            }
            Task::Multiclass(y, _) => {
                let hits =
                    rows.iter().zip(p.chunks_exact(k)).filter(|&(&r, p)| argmax(p) == y[r] as usize).count();
                hits as f64 / rows.len() as f64
            }
            Task::Regression(y) => {
                let truth: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
                crate::metrics::r2(&truth, &p)
            }
        }
    }
}

/// Index of the first largest value (NaN never wins).
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] || v[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backpropagation against central differences of the minibatch loss (penalty included), for each
    /// head, through two ReLU layers, with the minibatch cut into three chunks shared by two threads.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let (b, f) = (3 * CHUNK_ROWS + 7, 3);
        let input: Vec<f64> = (0..b * f).map(|_| rng.random_range(-2.0..2.0)).collect();
        let classes: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
        let binary: Vec<u32> = (0..b as u32).map(|i| i % 2).collect();
        let values: Vec<f64> = (0..b).map(|i| (i % 7) as f64 * 0.3 - 1.0).collect();
        let settings = Settings {
            hidden: vec![5, 4],
            alpha: 0.3,
            learning_rate: 0.0,
            batch_size: b,
            max_epochs: 1,
            patience: 1,
            tolerance: 0.0,
            seed: 0,
        };
        for task in [Task::Binary(&binary), Task::Multiclass(&classes, 3), Task::Regression(&values)] {
            let sizes = [f, 5, 4, task.outputs()];
            let mut layers: Vec<Dense> = sizes
                .windows(2)
                .map(|p| Dense {
                    inputs: p[0],
                    outputs: p[1],
                    weights: (0..p[0] * p[1]).map(|_| rng.random_range(-1.0..1.0)).collect(),
                    bias: (0..p[1]).map(|_| rng.random_range(-0.5..0.5)).collect(),
                })
                .collect();
            let loss_at = |layers: &mut Vec<Dense>| {
                let shared = Shared::new(layers.clone(), b);
                assert_eq!(shared.chunks.len(), 3);
                let mut t = Trainer::new(&shared, task.head());
                let rows: Vec<usize> = (0..b).collect();
                let x = MatrixView { rows: b, cols: f, data: &input };
                let loss = par::with_pool(2, |pool| t.step(pool, &shared, &rows, x, task, &settings));
                (loss, t.grad_w, t.grad_b)
            };
            let (_, grad_w, grad_b) = loss_at(&mut layers);
            let h = 1e-6;
            let mut checked = 0;
            for l in 0..layers.len() {
                let params = (0..layers[l].weights.len()).map(|i| (false, i, grad_w[l][i]));
                let params = params.chain((0..layers[l].bias.len()).map(|i| (true, i, grad_b[l][i])));
                for (is_bias, i, analytic) in params {
                    let at = |layers: &mut Vec<Dense>, v: f64| {
                        let layer = &mut layers[l];
                        if is_bias { layer.bias[i] = v } else { layer.weights[i] = v }
                    };
                    let keep = if is_bias { layers[l].bias[i] } else { layers[l].weights[i] };
                    at(&mut layers, keep + h);
                    let up = loss_at(&mut layers).0;
                    at(&mut layers, keep - h);
                    let down = loss_at(&mut layers).0;
                    at(&mut layers, keep);
                    let numeric = (up - down) / (2.0 * h);
                    assert!(
                        (numeric - analytic).abs() < 1e-6,
                        "layer {l} bias {is_bias} {i}: {numeric} vs {analytic}"
                    );
                    checked += 1;
                }
            }
            assert_eq!(checked, 3 * 5 + 5 + 5 * 4 + 4 + 4 * task.outputs() + task.outputs());
        }
    }

    /// The blocked product rounds every entry exactly as the plain loop does, for every shape of block
    /// and tail, with `A` read row-major or transposed.
    #[test]
    fn gemm_matches_the_plain_loop_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut panel = Vec::new();
        for (m, n, depth) in
            [(1, 1, 1), (7, 1, 13), (9, 2, 5), (4, 3, 8), (13, 4, 3), (6, 11, 17), (5, 100, 20)]
        {
            let a: Vec<f64> = (0..m * depth).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f64> = (0..depth * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for (strides, with_bias) in [((depth, 1), true), ((1, m), false)] {
                let (ai, as_) = strides;
                let mut expect = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut sum = if with_bias { bias[j] } else { 0.0 };
                        for s in 0..depth {
                            sum += a[i * ai + s * as_] * b[s * n + j];
                        }
                        expect[i * n + j] = sum;
                    }
                }
                let mut c = vec![f64::NAN; m * n];
                gemm(m, n, depth, &a, strides, &b, with_bias.then_some(&bias[..]), &mut c, &mut panel);
                assert_eq!(c, expect, "{m} x {n} x {depth}, strides {strides:?}");
            }
        }
    }

    /// The same seed gives the same bits on any number of threads: the minibatch chunks and the order
    /// their gradients are added in do not depend on the threads.
    #[test]
    fn fits_do_not_depend_on_the_thread_count() {
        let mut rng = StdRng::seed_from_u64(17);
        let (n, f) = (1500, 8);
        let data: Vec<f64> = (0..n * f).map(|_| rng.random_range(-2.0..2.0)).collect();
        let x = MatrixView { rows: n, cols: f, data: &data };
        let score = |i: usize| data[i * f] * data[i * f + 1] + data[i * f + 2];
        let binary: Vec<u32> = (0..n).map(|i| u32::from(score(i) > 0.0)).collect();
        let classes: Vec<u32> = (0..n).map(|i| (score(i).abs() * 2.0) as u32 % 3).collect();
        let values: Vec<f64> = (0..n).map(score).collect();
        let settings = Settings {
            hidden: vec![64, 5],
            alpha: 1e-4,
            learning_rate: 1e-3,
            batch_size: 230,
            max_epochs: 4,
            patience: 10,
            tolerance: 1e-4,
            seed: 9,
        };
        assert!(settings.batch_size * (f * 64 + 64 + 64 * 5 + 5) >= PARALLEL_WORK);
        let targets = [
            Target::Classes { y: &binary, n_classes: 2 },
            Target::Classes { y: &classes, n_classes: 3 },
            Target::Values(&values),
        ];
        for target in targets {
            let one = fit_with_threads(x, target, &settings, 1).unwrap();
            for threads in [2, 3, 5] {
                let many = fit_with_threads(x, target, &settings, threads).unwrap();
                assert_eq!(one, many, "{threads} threads");
                assert_eq!(one.final_loss.to_bits(), many.final_loss.to_bits());
            }
        }
    }

    #[test]
    fn stratified_split_keeps_class_proportions() {
        let y: Vec<u32> = (0..100).map(|i| u32::from(i % 4 == 0)).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let (train, val) = stratified_split(&y, 2, 10, &mut rng);
        assert_eq!((train.len(), val.len()), (90, 10));
        assert_eq!(val.iter().filter(|&&i| y[i] == 1).count(), 3); // 25% of 10, rounded by remainder
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // 1.5, 1.5, 2: the floors, then the tied largest remainder to the lower class.
        assert_eq!(approximate_mode(&[3, 3, 4], 5), vec![2, 1, 2]);
        assert_eq!(approximate_mode(&[0, 5], 5), vec![0, 5]);
    }
}
