//! A multilayer perceptron trained like scikit-learn's `MLPClassifier` / `MLPRegressor` with
//! `activation="relu"`, `solver="adam"`, `early_stopping=True`, `validation_fraction=0.1`: Glorot-uniform
//! initialization, shuffled minibatches every epoch, Adam, an L2 penalty `alpha/2 ||W||² / batch rows`,
//! and early stopping on the validation score (accuracy, or R² for a numeric target), keeping the
//! best weights.

use super::par::{axpy, dot};
use super::{Fit, FitError, Target};
use crate::matrix::MatrixView;
use crate::network::{Dense, Head, Network, sigmoid, softmax_into};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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
    let mut layers: Vec<Dense> = sizes
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
    let mut trainer = Trainer::new(&layers, batch, task.head());
    let mut order: Vec<usize> = (0..n_train).collect();
    let mut best_score = f64::NEG_INFINITY;
    let mut best_layers = layers.clone();
    let mut no_improvement = 0u32;
    let mut epochs = 0u32;
    let mut loss = f64::NAN;
    let mut stopped_early = false;
    let mut scorer = Scorer::new(&layers, task.head());

    while epochs < s.max_epochs {
        order.shuffle(&mut rng);
        let mut accumulated = 0.0;
        for rows in order.chunks(batch) {
            let b = rows.len();
            let input = &mut trainer.input[..b * x.cols];
            for (dst, &r) in input.chunks_exact_mut(x.cols).zip(rows) {
                dst.copy_from_slice(x.row(train[r]));
            }
            let batch_loss = trainer.step(&mut layers, b, |i| train[rows[i]], task, s);
            accumulated += batch_loss * b as f64;
        }
        epochs += 1;
        loss = accumulated / n_train as f64;
        if !loss.is_finite() {
            return Err(FitError::Diverged(format!(
                "mlp: the training loss became non-finite in epoch {epochs}; try a smaller learningRate"
            )));
        }
        let score = scorer.score(&layers, x_val, &val, task);
        if score < best_score + s.tolerance {
            no_improvement += 1;
        } else {
            no_improvement = 0;
        }
        if score > best_score {
            best_score = score;
            best_layers.clone_from(&layers);
        }
        if no_improvement > s.patience {
            stopped_early = true;
            break;
        }
    }
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

/// Minibatch state: activations, deltas, gradients and Adam's moments.
struct Trainer {
    head: Head,
    /// The batch's input rows.
    input: Vec<f64>,
    /// Each layer's output for the batch (after ReLU, or after the head for the last).
    acts: Vec<Vec<f64>>,
    deltas: Vec<Vec<f64>>,
    grad_w: Vec<Vec<f64>>,
    grad_b: Vec<Vec<f64>>,
    m_w: Vec<Vec<f64>>,
    v_w: Vec<Vec<f64>>,
    m_b: Vec<Vec<f64>>,
    v_b: Vec<Vec<f64>>,
    t: u64,
}

impl Trainer {
    fn new(layers: &[Dense], batch: usize, head: Head) -> Self {
        let per_layer =
            |f: &dyn Fn(&Dense) -> usize| layers.iter().map(|l| vec![0.0; f(l)]).collect::<Vec<_>>();
        Self {
            head,
            input: vec![0.0; batch * layers[0].inputs],
            acts: per_layer(&|l| batch * l.outputs),
            deltas: per_layer(&|l| batch * l.outputs),
            grad_w: per_layer(&|l| l.weights.len()),
            grad_b: per_layer(&|l| l.outputs),
            m_w: per_layer(&|l| l.weights.len()),
            v_w: per_layer(&|l| l.weights.len()),
            m_b: per_layer(&|l| l.outputs),
            v_b: per_layer(&|l| l.outputs),
            t: 0,
        }
    }

    /// One Adam step on the `b` rows in `self.input` (row `i` is data row `row(i)`); returns the batch's
    /// mean loss plus penalty, as scikit-learn's `_backprop` does.
    fn step(
        &mut self,
        layers: &mut [Dense],
        b: usize,
        row: impl Fn(usize) -> usize,
        task: Task<'_>,
        s: &Settings,
    ) -> f64 {
        let last = layers.len() - 1;
        forward(layers, &self.input[..b * layers[0].inputs], b, &mut self.acts, self.head);

        // Output deltas (prediction - target) and the loss.
        let k = layers[last].outputs;
        let out = &self.acts[last][..b * k];
        let delta = &mut self.deltas[last][..b * k];
        let eps = f64::EPSILON;
        let mut loss = 0.0;
        match task {
            Task::Binary(y) => {
                for i in 0..b {
                    let t = if y[row(i)] == 1 { 1.0 } else { 0.0 };
                    let p = out[i];
                    delta[i] = p - t;
                    let pc = p.clamp(eps, 1.0 - eps);
                    loss -= t * pc.ln() + (1.0 - t) * (1.0 - pc).ln();
                }
            }
            Task::Multiclass(y, _) => {
                for i in 0..b {
                    let c = y[row(i)] as usize;
                    let (p, d) = (&out[i * k..(i + 1) * k], &mut delta[i * k..(i + 1) * k]);
                    d.copy_from_slice(p);
                    d[c] -= 1.0;
                    loss -= p[c].clamp(eps, 1.0 - eps).ln();
                }
            }
            Task::Regression(y) => {
                for i in 0..b {
                    let r = out[i] - y[row(i)];
                    delta[i] = r;
                    loss += 0.5 * r * r;
                }
            }
        }
        let squares: f64 = layers.iter().map(|l| dot(&l.weights, &l.weights)).sum();
        let loss = loss / b as f64 + 0.5 * s.alpha * squares / b as f64;

        // Backward: gradients of each layer, and the deltas of the layer below through ReLU.
        for l in (0..=last).rev() {
            let layer = &layers[l];
            let (inputs, outputs) = (layer.inputs, layer.outputs);
            let a_prev: &[f64] =
                if l == 0 { &self.input[..b * inputs] } else { &self.acts[l - 1][..b * inputs] };
            let delta = &self.deltas[l][..b * outputs];
            let gw = &mut self.grad_w[l];
            gw.fill(0.0);
            for (a_row, d_row) in a_prev.chunks_exact(inputs).zip(delta.chunks_exact(outputs)) {
                for (&a, g) in a_row.iter().zip(gw.chunks_exact_mut(outputs)) {
                    if a != 0.0 {
                        axpy(a, d_row, g);
                    }
                }
            }
            let inv_b = 1.0 / b as f64;
            for (g, w) in gw.iter_mut().zip(&layer.weights) {
                *g = (*g + s.alpha * w) * inv_b;
            }
            let gb = &mut self.grad_b[l];
            gb.fill(0.0);
            for d_row in delta.chunks_exact(outputs) {
                axpy(1.0, d_row, gb);
            }
            for g in gb.iter_mut() {
                *g *= inv_b;
            }
            if l > 0 {
                let (below, above) = self.deltas.split_at_mut(l);
                let d_prev = &mut below[l - 1][..b * inputs];
                let delta = &above[0][..b * outputs];
                for ((dp_row, a_row), d_row) in d_prev
                    .chunks_exact_mut(inputs)
                    .zip(a_prev.chunks_exact(inputs))
                    .zip(delta.chunks_exact(outputs))
                {
                    for ((dp, &a), w_row) in
                        dp_row.iter_mut().zip(a_row).zip(layer.weights.chunks_exact(outputs))
                    {
                        *dp = if a > 0.0 { dot(w_row, d_row) } else { 0.0 };
                    }
                }
            }
        }

        // Adam.
        self.t += 1;
        let t = self.t as f64;
        let step = s.learning_rate * (1.0 - BETA2.powf(t)).sqrt() / (1.0 - BETA1.powf(t));
        for (l, layer) in layers.iter_mut().enumerate() {
            adam(&mut layer.weights, &self.grad_w[l], &mut self.m_w[l], &mut self.v_w[l], step);
            adam(&mut layer.bias, &self.grad_b[l], &mut self.m_b[l], &mut self.v_b[l], step);
        }
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
fn forward(layers: &[Dense], input: &[f64], b: usize, acts: &mut [Vec<f64>], head: Head) {
    let last = layers.len() - 1;
    for (l, layer) in layers.iter().enumerate() {
        let (done, rest) = acts.split_at_mut(l);
        let prev: &[f64] = if l == 0 { input } else { &done[l - 1][..b * layer.inputs] };
        let out = &mut rest[0][..b * layer.outputs];
        for (x_row, o_row) in prev.chunks_exact(layer.inputs).zip(out.chunks_exact_mut(layer.outputs)) {
            layer.forward_row(x_row, o_row);
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

/// Scores the validation rows in blocks.
struct Scorer {
    head: Head,
    acts: Vec<Vec<f64>>,
    predictions: Vec<f64>,
}

impl Scorer {
    fn new(layers: &[Dense], head: Head) -> Self {
        Self {
            head,
            acts: layers.iter().map(|l| vec![0.0; SCORE_BLOCK * l.outputs]).collect(),
            predictions: vec![],
        }
    }

    /// Accuracy (classes) or R² (values) of the network on `x` (the data rows `rows`).
    fn score(&mut self, layers: &[Dense], x: MatrixView<'_>, rows: &[usize], task: Task<'_>) -> f64 {
        let k = layers[layers.len() - 1].outputs;
        self.predictions.clear();
        for start in (0..x.rows).step_by(SCORE_BLOCK) {
            let end = (start + SCORE_BLOCK).min(x.rows);
            let b = end - start;
            forward(layers, x.rows_slice(start, end).data, b, &mut self.acts, self.head);
            self.predictions.extend_from_slice(&self.acts[layers.len() - 1][..b * k]);
        }
        let p = &self.predictions;
        match task {
            Task::Binary(y) => {
                let hits = rows.iter().zip(p).filter(|&(&r, &p)| (p > 0.5) == (y[r] == 1)).count();
                hits as f64 / rows.len() as f64
            }
            Task::Multiclass(y, _) => {
                let hits =
                    rows.iter().zip(p.chunks_exact(k)).filter(|&(&r, p)| argmax(p) == y[r] as usize).count();
                hits as f64 / rows.len() as f64
            }
            Task::Regression(y) => {
                let truth: Vec<f64> = rows.iter().map(|&r| y[r]).collect();
                crate::metrics::r2(&truth, p)
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
    /// head, through two ReLU layers.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = StdRng::seed_from_u64(3);
        let (b, f) = (7, 3);
        let input: Vec<f64> = (0..b * f).map(|_| rng.random_range(-2.0..2.0)).collect();
        let classes: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
        let binary: Vec<u32> = (0..b as u32).map(|i| i % 2).collect();
        let values: Vec<f64> = (0..b).map(|i| i as f64 * 0.3 - 1.0).collect();
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
                let mut t = Trainer::new(layers, b, task.head());
                t.input.copy_from_slice(&input);
                let loss = t.step(layers, b, |i| i, task, &settings);
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
