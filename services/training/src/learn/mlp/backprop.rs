//! One minibatch step of the MLP: the rows cut into chunks that the pool's threads share, each chunk's
//! forward and backward pass, the gradient sums added in chunk order, then Adam's update.

use super::{Settings, Task};
use crate::learn::gemm::{at_least, gemm};
use crate::learn::par::Pool;
use crate::matrix::DesignView;
use crate::network::{Dense, Head, sigmoid, softmax_into};
use crate::vector::{axpy, dot};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;
/// Minibatch rows per chunk at least: a minibatch is cut into chunks of about equal size (their number
/// set by the batch size alone), each with its own gradient sums, added in chunk order.
const CHUNK_ROWS: usize = 50;
/// Chunks per minibatch at most.
const MAX_CHUNKS: usize = 16;
/// Gradient values held by all chunks together at most.
const PARTIALS_BUDGET: usize = 1 << 23;

/// The weights every job reads, and their transposes for the backward pass.
pub(super) struct Weights {
    pub(super) layers: Vec<Dense>,
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

pub(super) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the jobs of a minibatch share: the weights, and the state of each chunk of rows.
pub(super) struct Shared {
    pub(super) weights: RwLock<Weights>,
    pub(super) chunks: Vec<Mutex<Chunk>>,
}

impl Shared {
    pub(super) fn new(layers: Vec<Dense>, batch: usize) -> Self {
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
pub(super) struct Chunk {
    /// The data rows.
    rows: Vec<usize>,
    /// Their dense design columns and one-hot levels.
    input: Vec<f64>,
    codes: Vec<u32>,
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
            codes: Vec::new(),
            acts: vec![Vec::new(); layers.len()],
            deltas: vec![Vec::new(); layers.len()],
            grad_w: layers.iter().map(|l| vec![0.0; l.weights.len()]).collect(),
            grad_b: layers.iter().map(|l| vec![0.0; l.outputs]).collect(),
            loss: 0.0,
            panel: Vec::new(),
        }
    }

    /// Forward and backward pass over the chunk's rows.
    fn run(&mut self, w: &Weights, x: DesignView<'_>, task: Task<'_>, head: Head) {
        let layers = &w.layers;
        let last = layers.len() - 1;
        let b = self.rows.len();
        x.gather_into(&self.rows, &mut self.input, &mut self.codes);
        let xb = x.with_rows(b, &self.input, &self.codes);
        forward(layers, xb, &mut self.acts, head, &mut self.panel);

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
            // grad_w[p][j] = sum over rows i of a_prev[i][p] * delta[i][j].
            if l == 0 {
                first_layer_gradient(xb, delta, outputs, &mut self.grad_w[0], &mut self.panel);
            } else {
                let a_prev = &self.acts[l - 1][..b * inputs];
                gemm(
                    inputs,
                    outputs,
                    b,
                    a_prev,
                    (1, inputs),
                    delta,
                    None,
                    &mut self.grad_w[l],
                    &mut self.panel,
                );
            }
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
                for (dp, &a) in d_prev.iter_mut().zip(&self.acts[l - 1][..b * inputs]) {
                    *dp = if a > 0.0 { *dp } else { 0.0 };
                }
            }
        }
    }
}

/// Adam's state; the summed gradient of the current minibatch.
pub(super) struct Trainer {
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
    pub(super) fn new(shared: &Shared, head: Head) -> Self {
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
    pub(super) fn step<'env>(
        &mut self,
        pool: &Pool<'_, 'env>,
        shared: &'env Shared,
        rows: &[usize],
        x: DesignView<'env>,
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

/// The first layer's weight gradient sums `grad` (`[inputs x outputs]`) over the rows of `x` with output
/// deltas `delta`: a product for the dense columns, and each row's deltas added to the weight row of its
/// level in each one-hot block.
fn first_layer_gradient(
    x: DesignView<'_>,
    delta: &[f64],
    outputs: usize,
    grad: &mut [f64],
    panel: &mut Vec<f64>,
) {
    let (b, d) = (x.rows, x.dense.cols);
    let (dense, one_hot) = grad.split_at_mut(d * outputs);
    gemm(d, outputs, b, x.dense.data, (1, d), delta, None, dense, panel);
    if x.blocks() == 0 {
        return;
    }
    one_hot.fill(0.0);
    for (i, d_row) in delta.chunks_exact(outputs).enumerate() {
        for j in x.ones(i) {
            axpy(1.0, d_row, &mut grad[j * outputs..(j + 1) * outputs]);
        }
    }
}

/// The forward pass of the rows of `x`: `acts[l]` gets layer `l`'s output (ReLU for hidden layers, the
/// head's probabilities or values for the last). The first layer reads the dense columns by a product
/// and adds the weight row of each one-hot level.
pub(super) fn forward(
    layers: &[Dense],
    x: DesignView<'_>,
    acts: &mut [Vec<f64>],
    head: Head,
    panel: &mut Vec<f64>,
) {
    let last = layers.len() - 1;
    let b = x.rows;
    for (l, layer) in layers.iter().enumerate() {
        let (done, rest) = acts.split_at_mut(l);
        let out = at_least(&mut rest[0], b * layer.outputs);
        let n = layer.outputs;
        if l == 0 {
            let d = x.dense.cols;
            gemm(b, n, d, x.dense.data, (d, 1), &layer.weights[..d * n], Some(&layer.bias), out, panel);
            if x.blocks() > 0 {
                for (i, row) in out.chunks_exact_mut(n).take(b).enumerate() {
                    for j in x.ones(i) {
                        axpy(1.0, &layer.weights[j * n..(j + 1) * n], row);
                    }
                }
            }
        } else {
            let prev = &done[l - 1][..b * layer.inputs];
            gemm(b, n, layer.inputs, prev, (layer.inputs, 1), &layer.weights, Some(&layer.bias), out, panel);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::par;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
                let x = crate::matrix::MatrixView { rows: b, cols: f, data: &input }.into();
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
}
