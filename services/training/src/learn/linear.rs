//! Logistic regression by L-BFGS and ridge regression by a direct solve.

use super::par::sum_rows;
use super::{Fit, FitError, lbfgs};
use crate::matrix::DesignView;
use crate::network::{Dense, Head, Network};
use crate::vector::{axpy, dot};

/// Logistic regression parameters at most (L-BFGS keeps 20 vectors of them), so a wide one-hot design
/// cannot exhaust memory.
const MAX_PARAMETERS: usize = 1 << 22;
/// Features up to which ridge regression solves the normal equations directly (their Gram matrix is
/// features²); wider designs take conjugate gradients.
const MAX_RIDGE_FEATURES: usize = 4096;

/// scikit-learn's `LogisticRegression(C=1/l2, solver="lbfgs")`: minimizes
/// `(sum_i logloss_i + l2/2 ||W||²) / n` (the intercepts unpenalized) from zero. Two classes: one logit
/// for class 1 and a logistic head; more: a multinomial softmax over one column per class.
pub(super) fn logistic(
    x: DesignView<'_>,
    y: &[u32],
    n_classes: usize,
    l2: f64,
    max_iterations: u32,
    tolerance: f64,
) -> Result<Fit, FitError> {
    let f = x.cols;
    let k = if n_classes == 2 { 1 } else { n_classes };
    let weights = k.checked_mul(f).filter(|&w| w + k <= MAX_PARAMETERS).ok_or_else(|| {
        FitError::InvalidData(format!(
            "{f} features x {n_classes} classes is too many parameters for logistic regression"
        ))
    })?;
    let dim = weights + k;
    let n = x.rows as f64;
    let mut partials = Vec::new();
    let mut sums = vec![0.0; dim + 1];
    // Parameters class-major: the weights of output c at [c*f, (c+1)*f), then the k intercepts.
    let objective = |theta: &[f64], grad: &mut [f64]| -> f64 {
        let (w, b) = theta.split_at(weights);
        if k == 1 {
            sum_rows(x.rows, dim + 1, &mut partials, &mut sums, |s, e, acc| {
                binary_rows(x, y, w, b[0], s, e, acc)
            });
        } else {
            sum_rows(x.rows, dim + 1, &mut partials, &mut sums, |s, e, acc| {
                multinomial_rows(x, y, w, b, s, e, acc)
            });
        }
        let mut penalty = 0.0;
        for ((g, s), wi) in grad[..weights].iter_mut().zip(&sums[..weights]).zip(w) {
            penalty += wi * wi;
            *g = (s + l2 * wi) / n;
        }
        for (g, s) in grad[weights..].iter_mut().zip(&sums[weights..dim]) {
            *g = s / n;
        }
        (sums[dim] + 0.5 * l2 * penalty) / n
    };
    let options = lbfgs::Options { max_iterations, gtol: tolerance, ..lbfgs::Options::default() };
    let m = lbfgs::minimize(objective, vec![0.0; dim], &options)
        .map_err(|e| FitError::Diverged(format!("logistic regression: {e}")))?;
    if !m.f.is_finite() || m.x.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Diverged(
            "logistic regression: the loss or the weights became non-finite".into(),
        ));
    }
    let (w, b) = m.x.split_at(weights);
    // Dense weights are [inputs x outputs]: transpose the class-major block.
    let mut dense_w = vec![0.0; weights];
    for (c, wc) in w.chunks_exact(f).enumerate() {
        for (j, v) in wc.iter().enumerate() {
            dense_w[j * k + c] = *v;
        }
    }
    let network = Network {
        hidden: vec![],
        output: Dense { inputs: f, outputs: k, weights: dense_w, bias: b.to_vec() },
        head: if k == 1 { Head::Logistic } else { Head::Softmax },
    };
    Ok(Fit { network, iterations: m.iterations, converged: m.converged(), final_loss: m.f })
}

/// Adds the rows `start..end` of the binary log loss and its gradient into `acc` = [dW (f), db, loss].
fn binary_rows(x: DesignView<'_>, y: &[u32], w: &[f64], b: f64, start: usize, end: usize, acc: &mut [f64]) {
    let f = x.cols;
    let (gw, rest) = acc.split_at_mut(f);
    let mut gb = 0.0;
    let mut loss = 0.0;
    for (i, &label) in (start..end).zip(&y[start..end]) {
        let z = b + x.dot(i, w);
        let t = if label == 1 { 1.0 } else { 0.0 };
        // log(1 + e^z) - t z, and sigmoid(z), from one exponential of -|z|.
        let e = (-z.abs()).exp();
        loss += e.ln_1p() + z.max(0.0) - t * z;
        let p = if z >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
        let r = p - t;
        gb += r;
        x.axpy(i, r, gw);
    }
    rest[0] += gb;
    rest[1] += loss;
}

/// Adds the rows `start..end` of the multinomial log loss and its gradient into
/// `acc` = [dW (k x f, class-major), db (k), loss].
fn multinomial_rows(
    x: DesignView<'_>,
    y: &[u32],
    w: &[f64],
    b: &[f64],
    start: usize,
    end: usize,
    acc: &mut [f64],
) {
    let f = x.cols;
    let k = b.len();
    let (gw, rest) = acc.split_at_mut(k * f);
    let (gb, loss) = rest.split_at_mut(k);
    let mut z = vec![0.0; k];
    let mut total = 0.0;
    for (i, &label) in (start..end).zip(&y[start..end]) {
        let label = label as usize;
        for ((zc, wc), bc) in z.iter_mut().zip(w.chunks_exact(f)).zip(b) {
            *zc = bc + x.dot(i, wc);
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z_label = z[label] - max;
        let mut sum = 0.0;
        for zc in z.iter_mut() {
            *zc = (*zc - max).exp();
            sum += *zc;
        }
        total += sum.ln() - z_label;
        let inv = 1.0 / sum;
        for (c, ((ec, gwc), gbc)) in z.iter().zip(gw.chunks_exact_mut(f)).zip(gb.iter_mut()).enumerate() {
            let r = ec * inv - if c == label { 1.0 } else { 0.0 };
            *gbc += r;
            x.axpy(i, r, gwc);
        }
    }
    loss[0] += total;
}

/// scikit-learn's `Ridge(alpha=l2)`: minimizes `||y - X w - b||² + l2 ||w||²` by centering `X` and `y`
/// (the intercept is unpenalized) and solving `(Xc'Xc + l2 I) w = Xc'yc`: exactly by Cholesky up to
/// [`MAX_RIDGE_FEATURES`] features, by preconditioned conjugate gradients beyond (a wide one-hot design,
/// as scikit-learn's `sparse_cg` solver does for sparse input), never forming `Xc'Xc` there.
pub(super) fn ridge(x: DesignView<'_>, y: &[f64], l2: f64) -> Result<Fit, FitError> {
    let f = x.cols;
    let n = x.rows;
    let mut partials = Vec::new();
    let mut sums = vec![0.0; f + 1];
    sum_rows(n, f + 1, &mut partials, &mut sums, |s, e, acc| {
        let (ax, ay) = acc.split_at_mut(f);
        for (i, yi) in (s..e).zip(&y[s..e]) {
            x.axpy(i, 1.0, ax);
            ay[0] += yi;
        }
    });
    let problem = Centered {
        x,
        y,
        mean: sums[..f].iter().map(|s| s / n as f64).collect(),
        y_mean: sums[f] / n as f64,
        l2,
    };
    let (w, iterations, converged) = if f <= MAX_RIDGE_FEATURES {
        (ridge_direct(&problem, &mut partials)?, 1, true)
    } else {
        ridge_cg(&problem, &mut partials)
    };
    let b = problem.y_mean - dot(&problem.mean, &w);

    let mut sse = [0.0];
    sum_rows(n, 1, &mut partials, &mut sse, |s, e, acc| {
        for (i, yi) in (s..e).zip(&y[s..e]) {
            let r = yi - b - x.dot(i, &w);
            acc[0] += r * r;
        }
    });
    let final_loss = (sse[0] + l2 * dot(&w, &w)) / n as f64;
    if !final_loss.is_finite() || !b.is_finite() {
        return Err(FitError::Diverged("linearRegression: the solution is not finite".into()));
    }
    let network = Network {
        hidden: vec![],
        output: Dense { inputs: f, outputs: 1, weights: w, bias: vec![b] },
        head: Head::Identity,
    };
    Ok(Fit { network, iterations, converged, final_loss })
}

/// A ridge regression with its column and target means: `(Xc'Xc + l2 I) w = Xc'yc` for the centered `Xc`
/// and `yc`.
struct Centered<'a> {
    x: DesignView<'a>,
    y: &'a [f64],
    mean: Vec<f64>,
    y_mean: f64,
    l2: f64,
}

/// The ridge weights from the normal equations, by Cholesky.
fn ridge_direct(problem: &Centered<'_>, partials: &mut Vec<f64>) -> Result<Vec<f64>, FitError> {
    let Centered { x, y, ref mean, y_mean, l2 } = *problem;
    let f = x.cols;
    // The upper triangle of Xc'Xc, then Xc'yc.
    let mut gram = vec![0.0; f * f + f];
    sum_rows(x.rows, f * f + f, partials, &mut gram, |s, e, acc| {
        let (g, xy) = acc.split_at_mut(f * f);
        let mut xc = vec![0.0; f];
        for (i, yi) in (s..e).zip(&y[s..e]) {
            x.write_row(i, &mut xc);
            for (c, m) in xc.iter_mut().zip(mean) {
                *c -= m;
            }
            let yc = yi - y_mean;
            for j in 0..f {
                let a = xc[j];
                if a != 0.0 {
                    axpy(a, &xc[j..], &mut g[j * f + j..(j + 1) * f]);
                    xy[j] += a * yc;
                }
            }
        }
    });
    let rhs = gram.split_off(f * f);
    for j in 0..f {
        for l in 0..j {
            gram[j * f + l] = gram[l * f + j];
        }
        gram[j * f + j] += l2;
    }
    solve_spd(&gram, &rhs, f)
        .ok_or_else(|| FitError::Diverged("linearRegression: the normal equations are not finite".into()))
}

/// Conjugate-gradient iterations at most for a wide ridge regression.
const MAX_CG_ITERATIONS: u32 = 5000;
/// The residual, relative to the right-hand side, at which conjugate gradients stop.
const CG_TOLERANCE: f64 = 1e-10;

/// The ridge weights by conjugate gradients preconditioned with the diagonal of `Xc'Xc + l2 I`, each
/// product with the matrix one pass over the rows; returns the weights, the iterations and whether the
/// residual fell below [`CG_TOLERANCE`].
fn ridge_cg(problem: &Centered<'_>, partials: &mut Vec<f64>) -> (Vec<f64>, u32, bool) {
    let Centered { x, y, ref mean, y_mean, l2 } = *problem;
    let (f, n) = (x.cols, x.rows);
    let d = x.dense.cols;
    // Xc' u for the u of each row: X' u minus the means times the sum of u.
    let mut acc = vec![0.0; f + 1];
    let mut centered_t = |u: &(dyn Fn(usize) -> f64 + Sync), out: &mut [f64], partials: &mut Vec<f64>| {
        sum_rows(n, f + 1, partials, &mut acc, |s, e, acc| {
            let (ax, au) = acc.split_at_mut(f);
            for i in s..e {
                let ui = u(i);
                x.axpy(i, ui, ax);
                au[0] += ui;
            }
        });
        for ((o, a), m) in out.iter_mut().zip(&acc[..f]).zip(mean) {
            *o = a - m * acc[f];
        }
    };
    let mut rhs = vec![0.0; f];
    centered_t(&|i| y[i] - y_mean, &mut rhs, partials);
    // The diagonal: sum of squares minus n mean², plus l2 (1 where it vanishes).
    let mut squares = vec![0.0; f];
    sum_rows(n, f, partials, &mut squares, |s, e, acc| {
        for i in s..e {
            for (a, v) in acc[..d].iter_mut().zip(x.dense.row(i)) {
                *a += v * v;
            }
            for j in x.ones(i) {
                acc[j] += 1.0;
            }
        }
    });
    let inv_diag: Vec<f64> = squares
        .iter()
        .zip(mean)
        .map(|(s, m)| {
            let diag = s - n as f64 * m * m + l2;
            if diag > 0.0 { 1.0 / diag } else { 1.0 }
        })
        .collect();

    let norm_rhs = dot(&rhs, &rhs).sqrt();
    let mut w = vec![0.0; f];
    if norm_rhs == 0.0 {
        return (w, 0, true);
    }
    let mut r = rhs;
    let mut z: Vec<f64> = r.iter().zip(&inv_diag).map(|(r, i)| r * i).collect();
    let mut p = z.clone();
    let mut rz = dot(&r, &z);
    let mut q = vec![0.0; f];
    for iteration in 1..=MAX_CG_ITERATIONS {
        // q = (Xc'Xc + l2 I) p.
        let mp = dot(mean, &p);
        let pv = &p;
        centered_t(&|i| x.dot(i, pv) - mp, &mut q, partials);
        axpy(l2, &p, &mut q);
        let pq = dot(&p, &q);
        if pq.is_nan() || pq <= 0.0 {
            return (w, iteration, false);
        }
        let alpha = rz / pq;
        axpy(alpha, &p, &mut w);
        axpy(-alpha, &q, &mut r);
        if dot(&r, &r).sqrt() <= CG_TOLERANCE * norm_rhs {
            return (w, iteration, true);
        }
        for ((zi, ri), di) in z.iter_mut().zip(&r).zip(&inv_diag) {
            *zi = ri * di;
        }
        let rz_next = dot(&r, &z);
        let beta = rz_next / rz;
        rz = rz_next;
        for (pi, zi) in p.iter_mut().zip(&z) {
            *pi = zi + beta * *pi;
        }
    }
    (w, MAX_CG_ITERATIONS, false)
}

/// Solves `A w = rhs` for a symmetric positive semi-definite `A` (`f x f`, row-major) by Cholesky. A
/// column whose pivot vanishes (relative to its diagonal entry) depends linearly on the ones before it,
/// which happens only without a penalty (duplicated columns, a full one-hot block next to the intercept):
/// its weight is set to 0 and the rest solve the reduced system, a least-squares solution that predicts
/// as well as any other.
fn solve_spd(a: &[f64], rhs: &[f64], f: usize) -> Option<Vec<f64>> {
    if a.iter().chain(rhs).any(|v| !v.is_finite()) {
        return None;
    }
    let mut l = a.to_vec();
    cholesky_semidefinite(&mut l, f);
    let mut w = rhs.to_vec();
    // L z = rhs, then L' w = z; a dropped column (zero pivot) gets 0.
    for j in 0..f {
        let pivot = l[j * f + j];
        w[j] = if pivot == 0.0 { 0.0 } else { (w[j] - dot(&l[j * f..j * f + j], &w[..j])) / pivot };
    }
    for j in (0..f).rev() {
        let pivot = l[j * f + j];
        if pivot == 0.0 {
            w[j] = 0.0;
            continue;
        }
        let mut s = w[j];
        for i in j + 1..f {
            s -= l[i * f + j] * w[i];
        }
        w[j] = s / pivot;
    }
    w.iter().all(|v| v.is_finite()).then_some(w)
}

/// In-place lower Cholesky factor of `a` (row-major `f x f`; the lower triangle is read and written).
/// A pivot at most 1e-10 of its diagonal entry marks a dependent column: its column of `L` is zeroed.
fn cholesky_semidefinite(a: &mut [f64], f: usize) {
    for j in 0..f {
        let diag = a[j * f + j];
        let lj = &a[j * f..j * f + j];
        let pivot = diag - dot(lj, lj);
        let keep = pivot > 1e-10 * diag.abs() && pivot > 0.0;
        let pivot = if keep { pivot.sqrt() } else { 0.0 };
        a[j * f + j] = pivot;
        // The rows below: L[i][j] = (A[i][j] - L_i . L_j) / L[j][j], or 0 for a dropped column.
        let (head, tail) = a.split_at_mut((j + 1) * f);
        let lj = &head[j * f..j * f + j];
        for row_i in tail.chunks_exact_mut(f) {
            row_i[j] = if keep { (row_i[j] - dot(&row_i[..j], lj)) / pivot } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{Design, Matrix, NO_LEVEL};

    /// Conjugate gradients (the path of a wide design) reach the Cholesky solution on a design with dense
    /// columns and a one-hot block (some rows without a level), with and without a penalty.
    #[test]
    fn conjugate_gradients_agree_with_the_direct_solve() {
        let (n, d, levels) = (400, 3, 50);
        let mut state = 5u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let dense: Vec<f64> = (0..n * d).map(|_| next() * 4.0 - 2.0).collect();
        let codes: Vec<u32> =
            (0..n).map(|_| if next() < 0.1 { NO_LEVEL } else { (next() * levels as f64) as u32 }).collect();
        let design =
            Design { dense: Matrix::from_vec(n, d, dense), codes, starts: vec![d], cols: d + levels };
        let x = design.view();
        let y: Vec<f64> = (0..n).map(|i| x.dense.row(i)[0] * 2.0 - x.dense.row(i)[2] + next()).collect();
        for l2 in [1.0, 1e-3] {
            let mut sums = vec![0.0; x.cols];
            for i in 0..n {
                x.axpy(i, 1.0 / n as f64, &mut sums);
            }
            let y_mean = y.iter().sum::<f64>() / n as f64;
            let problem = Centered { x, y: &y, mean: sums, y_mean, l2 };
            let direct = ridge_direct(&problem, &mut Vec::new()).unwrap();
            let (cg, iterations, converged) = ridge_cg(&problem, &mut Vec::new());
            assert!(converged, "l2 {l2}: {iterations} iterations");
            let diff = direct.iter().zip(&cg).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-7, "l2 {l2}: weights differ by {diff}");
        }
    }
}
