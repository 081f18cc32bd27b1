//! A multilayer perceptron trained like scikit-learn's `MLPClassifier` / `MLPRegressor` with
//! `activation="relu"`, `solver="adam"`, `early_stopping=True`, `validation_fraction=0.1`: Glorot-uniform
//! initialization, shuffled minibatches every epoch, Adam, an L2 penalty `alpha/2 ||W||² / batch rows`,
//! and early stopping on the validation score (accuracy, or R² for a numeric target), keeping the
//! best weights.

mod backprop;

use super::par::{self, Pool};
use super::{Fit, FitError, Target};
use crate::matrix::DesignView;
use crate::metrics::argmax;
use crate::network::{Dense, Head, Network};
use backprop::{Shared, Trainer, Weights, forward, lock, read};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::sync::{Mutex, RwLock};

const VALIDATION_FRACTION: f64 = 0.1;
/// Weights and biases at most (Adam keeps four more copies, early stopping one).
const MAX_PARAMETERS: usize = 1 << 24;
/// Activations of a minibatch (or a validation block) at most, all layers together.
const MAX_ACTIVATIONS: usize = 1 << 25;
/// Validation rows per forward pass.
const SCORE_BLOCK: usize = 512;
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

pub(super) fn fit(x: DesignView<'_>, target: Target<'_>, s: &Settings) -> Result<Fit, FitError> {
    fit_with_threads(x, target, s, par::threads())
}

/// [`fit`] on at most `threads` threads; the result is the same for any number.
fn fit_with_threads(
    x: DesignView<'_>,
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
    let x_val = x.gather(&val);
    let x_val = x_val.view();

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
        x: DesignView<'env>,
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
            forward(layers, x.rows_slice(start, end), acts, head, panel);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same bits on any number of threads: the minibatch chunks and the order
    /// their gradients are added in do not depend on the threads.
    #[test]
    fn fits_do_not_depend_on_the_thread_count() {
        let mut rng = StdRng::seed_from_u64(17);
        let (n, f) = (1500, 8);
        let data: Vec<f64> = (0..n * f).map(|_| rng.random_range(-2.0..2.0)).collect();
        let x = crate::matrix::MatrixView { rows: n, cols: f, data: &data }.into();
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
