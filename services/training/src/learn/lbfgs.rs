//! Limited-memory BFGS for smooth unconstrained minimization, with a line search that enforces the
//! strong Wolfe conditions (sufficient decrease and curvature), after Nocedal & Wright, *Numerical
//! Optimization*, algorithms 7.4, 3.5 and 3.6. The stopping rules follow SciPy's L-BFGS-B, which
//! scikit-learn's `lbfgs` solver runs: the largest gradient component at most `gtol`, or a relative
//! decrease of the objective of at most `ftol`.

use crate::vector::{axpy, dot};
use thiserror::Error;

/// Settings of [`minimize`].
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Number of correction pairs kept (SciPy's `maxcor`).
    pub memory: usize,
    /// Iterations (accepted steps) at most.
    pub max_iterations: u32,
    /// Stop when `max_i |g_i| <= gtol`.
    pub gtol: f64,
    /// Stop when `(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol`.
    pub ftol: f64,
    /// Objective evaluations per line search at most (SciPy's `maxls`).
    pub max_line_search: u32,
    /// Sufficient-decrease constant of the Wolfe conditions.
    pub c1: f64,
    /// Curvature constant of the strong Wolfe conditions.
    pub c2: f64,
}

impl Default for Options {
    /// SciPy's L-BFGS-B defaults as scikit-learn sets them (`maxls` 50, `ftol` 64 eps).
    fn default() -> Self {
        Self {
            memory: 10,
            max_iterations: 100,
            gtol: 1e-5,
            ftol: 64.0 * f64::EPSILON,
            max_line_search: 50,
            c1: 1e-3,
            c2: 0.9,
        }
    }
}

/// Why the iteration stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The largest gradient component fell to `gtol`.
    Gradient,
    /// The objective stopped decreasing (relative change at most `ftol`).
    FunctionChange,
    /// `max_iterations` steps were taken.
    MaxIterations,
    /// No step along the search direction (even steepest descent) decreased the objective enough: the
    /// point is as good as the arithmetic allows, or the objective is not smooth there.
    LineSearch,
}

/// The result of [`minimize`]: the best point found and how the search ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    /// The objective at `x`.
    pub f: f64,
    /// `max_i |g_i|` at `x`.
    pub gradient_max: f64,
    /// Accepted steps.
    pub iterations: u32,
    /// Objective evaluations.
    pub evaluations: u32,
    pub stop: Stop,
}

impl Minimum {
    /// Whether a convergence test (gradient or function change) ended the search.
    pub fn converged(&self) -> bool {
        matches!(self.stop, Stop::Gradient | Stop::FunctionChange)
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum LbfgsError {
    #[error("the objective or its gradient is not finite at the starting point")]
    NonFiniteStart,
    #[error("the starting point has {got} values but the objective was called with {expected}")]
    Dimension { expected: usize, got: usize },
}

/// Minimizes `objective`, which returns f(x) and writes the gradient into its second argument, starting
/// from `x0`. Non-finite values at a trial point make the line search step back; only a non-finite start
/// is an error.
pub fn minimize<F>(mut objective: F, x0: Vec<f64>, options: &Options) -> Result<Minimum, LbfgsError>
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut f = objective(&x, &mut g);
    let mut evaluations = 1u32;
    if !f.is_finite() || g.iter().any(|v| !v.is_finite()) {
        return Err(LbfgsError::NonFiniteStart);
    }
    let mut memory = Memory::new(options.memory.max(1), n);
    let mut d = vec![0.0; n];
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    let mut iterations = 0u32;
    let mut restarted = false;

    let stop = loop {
        if max_abs(&g) <= options.gtol {
            break Stop::Gradient;
        }
        if iterations >= options.max_iterations {
            break Stop::MaxIterations;
        }
        memory.direction(&g, &mut d);
        let mut gd = dot(&g, &d);
        if !(gd < 0.0 && gd.is_finite()) {
            // Not a descent direction (rounding in the memory): start over from steepest descent.
            memory.clear();
            for (di, gi) in d.iter_mut().zip(&g) {
                *di = -gi;
            }
            gd = -dot(&g, &g);
        }
        let first_step = if memory.is_empty() { (1.0 / norm(&d)).min(1e10) } else { 1.0 };
        let search = LineSearch { f0: f, gd0: gd, options };
        let found = search.run(&mut objective, &x, &d, first_step, &mut x_new, &mut g_new, &mut evaluations);
        let Some((step, f_new)) = found else {
            if !memory.is_empty() && !restarted {
                // As L-BFGS-B does: forget the curvature pairs and retry once along -g.
                memory.clear();
                restarted = true;
                continue;
            }
            break Stop::LineSearch;
        };
        restarted = false;
        iterations += 1;
        memory.push(&x, &x_new, &g, &g_new, -gd * step);
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut g, &mut g_new);
        let f_old = f;
        f = f_new;
        if max_abs(&g) <= options.gtol {
            break Stop::Gradient;
        }
        if (f_old - f) / f_old.abs().max(f.abs()).max(1.0) <= options.ftol {
            break Stop::FunctionChange;
        }
    };
    let gradient_max = max_abs(&g);
    Ok(Minimum { x, f, gradient_max, iterations, evaluations, stop })
}

/// The correction pairs `(s, y)` in a ring buffer, newest last.
struct Memory {
    s: Vec<Vec<f64>>,
    y: Vec<Vec<f64>>,
    rho: Vec<f64>,
    alpha: Vec<f64>,
    /// Index of the oldest pair.
    start: usize,
    len: usize,
}

impl Memory {
    fn new(capacity: usize, n: usize) -> Self {
        Self {
            s: vec![vec![0.0; n]; capacity],
            y: vec![vec![0.0; n]; capacity],
            rho: vec![0.0; capacity],
            alpha: vec![0.0; capacity],
            start: 0,
            len: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }

    fn slot(&self, i: usize) -> usize {
        (self.start + i) % self.s.len()
    }

    /// Stores `s = x1 - x0`, `y = g1 - g0` unless the curvature `s.y` is too small to keep the
    /// approximation positive definite (L-BFGS-B's test: `s.y <= eps * (-g0.d * step)`).
    fn push(&mut self, x0: &[f64], x1: &[f64], g0: &[f64], g1: &[f64], decrease: f64) {
        let mut sy = 0.0;
        for (((a, b), c), e) in x1.iter().zip(x0).zip(g1).zip(g0) {
            sy += (a - b) * (c - e);
        }
        if !(sy > f64::EPSILON * decrease && sy.is_finite()) {
            return;
        }
        let cap = self.s.len();
        let slot = if self.len < cap { self.slot(self.len) } else { self.start };
        for ((si, a), b) in self.s[slot].iter_mut().zip(x1).zip(x0) {
            *si = a - b;
        }
        for ((yi, a), b) in self.y[slot].iter_mut().zip(g1).zip(g0) {
            *yi = a - b;
        }
        self.rho[slot] = 1.0 / sy;
        if self.len < cap {
            self.len += 1;
        } else {
            self.start = (self.start + 1) % cap;
        }
    }

    /// `d = -H g` by the two-loop recursion, with `H0 = (s.y / y.y) I` from the newest pair.
    fn direction(&mut self, g: &[f64], d: &mut [f64]) {
        for (di, gi) in d.iter_mut().zip(g) {
            *di = -gi;
        }
        if self.len == 0 {
            return;
        }
        for i in (0..self.len).rev() {
            let k = self.slot(i);
            let a = self.rho[k] * dot(&self.s[k], d);
            self.alpha[k] = a;
            axpy(-a, &self.y[k], d);
        }
        let newest = self.slot(self.len - 1);
        let yy = dot(&self.y[newest], &self.y[newest]);
        let gamma = 1.0 / (self.rho[newest] * yy);
        if gamma.is_finite() && gamma > 0.0 {
            for di in d.iter_mut() {
                *di *= gamma;
            }
        }
        for i in 0..self.len {
            let k = self.slot(i);
            let b = self.rho[k] * dot(&self.y[k], d);
            axpy(self.alpha[k] - b, &self.s[k], d);
        }
    }
}

/// One point of the line: the step, the objective there and its directional derivative.
#[derive(Clone, Copy, Debug)]
struct Point {
    step: f64,
    f: f64,
    slope: f64,
}

struct LineSearch<'o> {
    f0: f64,
    /// Directional derivative at step 0 (negative).
    gd0: f64,
    options: &'o Options,
}

impl LineSearch<'_> {
    fn armijo(&self, p: &Point) -> bool {
        p.f <= self.f0 + self.options.c1 * p.step * self.gd0
    }

    fn curvature(&self, p: &Point) -> bool {
        p.slope.abs() <= -self.options.c2 * self.gd0
    }

    /// Finds a step satisfying the strong Wolfe conditions; on success `x_new`, `g_new` hold the
    /// accepted point and the step and objective value are returned. When the evaluations run out, the
    /// best point with sufficient decrease is accepted; `None` when there is none.
    #[allow(clippy::too_many_arguments)]
    fn run<F>(
        &self,
        objective: &mut F,
        x: &[f64],
        d: &[f64],
        first_step: f64,
        x_new: &mut [f64],
        g_new: &mut [f64],
        evaluations: &mut u32,
    ) -> Option<(f64, f64)>
    where
        F: FnMut(&[f64], &mut [f64]) -> f64,
    {
        let budget = self.options.max_line_search.max(1);
        let used = std::cell::Cell::new(0u32);
        let mut eval = |step: f64, x_new: &mut [f64], g_new: &mut [f64]| -> Point {
            for ((xn, xi), di) in x_new.iter_mut().zip(x).zip(d) {
                *xn = xi + step * di;
            }
            *evaluations += 1;
            used.set(used.get() + 1);
            let f = objective(x_new, g_new);
            let slope = dot(g_new, d);
            if f.is_finite() && slope.is_finite() {
                Point { step, f, slope }
            } else {
                Point { step, f: f64::INFINITY, slope: f64::NAN }
            }
        };
        let origin = Point { step: 0.0, f: self.f0, slope: self.gd0 };
        let mut prev = origin;
        let mut step = first_step;
        // Bracketing: grow the step until it overshoots (then zoom) or satisfies the conditions.
        let (mut lo, mut hi) = loop {
            let p = eval(step, x_new, g_new);
            if !self.armijo(&p) || (prev.step > 0.0 && p.f >= prev.f) {
                break (prev, p);
            }
            if self.curvature(&p) {
                return Some((p.step, p.f));
            }
            if p.slope >= 0.0 {
                break (p, prev);
            }
            if used.get() >= budget {
                // Sufficient decrease holds here; take it.
                return Some((p.step, p.f));
            }
            prev = p;
            step = (step * 4.0).min(1e20);
        };
        // Zoom: `lo` has sufficient decrease and the lowest value so far; the minimizer lies between.
        loop {
            let width = (hi.step - lo.step).abs();
            if used.get() >= budget || width <= f64::EPSILON * lo.step.abs().max(hi.step.abs()) {
                if lo.step > 0.0 && lo.f < self.f0 {
                    let p = eval(lo.step, x_new, g_new);
                    return p.f.is_finite().then_some((p.step, p.f));
                }
                return None;
            }
            let step = interpolate(&lo, &hi);
            let p = eval(step, x_new, g_new);
            if !self.armijo(&p) || p.f >= lo.f {
                hi = p;
            } else {
                if self.curvature(&p) {
                    return Some((p.step, p.f));
                }
                if p.slope * (hi.step - lo.step) >= 0.0 {
                    hi = lo;
                }
                lo = p;
            }
        }
    }
}

/// The minimizer of the cubic through two points with their slopes, kept at least 10% of the interval
/// away from its ends; the midpoint when the cubic is unusable.
fn interpolate(a: &Point, b: &Point) -> f64 {
    let (left, right) = if a.step < b.step { (a.step, b.step) } else { (b.step, a.step) };
    let margin = 0.1 * (right - left);
    let mid = 0.5 * (left + right);
    if !(a.f.is_finite() && b.f.is_finite() && a.slope.is_finite() && b.slope.is_finite()) {
        return mid;
    }
    let d1 = a.slope + b.slope - 3.0 * (a.f - b.f) / (a.step - b.step);
    let disc = d1 * d1 - a.slope * b.slope;
    if disc < 0.0 {
        return mid;
    }
    let d2 = (b.step - a.step).signum() * disc.sqrt();
    let t = b.step - (b.step - a.step) * (b.slope + d2 - d1) / (b.slope - a.slope + 2.0 * d2);
    if t.is_finite() && t >= left + margin && t <= right - margin { t } else { mid }
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m: f64, v| if v.abs() > m || v.is_nan() { v.abs() } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64], g: &mut [f64]) -> f64 {
        let n = x.len();
        g.fill(0.0);
        let mut f = 0.0;
        for i in 0..n - 1 {
            let a = x[i + 1] - x[i] * x[i];
            let b = 1.0 - x[i];
            f += 100.0 * a * a + b * b;
            g[i] += -400.0 * x[i] * a - 2.0 * b;
            g[i + 1] += 200.0 * a;
        }
        f
    }

    #[test]
    fn minimizes_rosenbrock() {
        let options = Options { max_iterations: 1000, gtol: 1e-8, ..Options::default() };
        let m = minimize(rosenbrock, vec![-1.2, 1.0], &options).unwrap();
        assert!(m.converged(), "{m:?}");
        assert!((m.x[0] - 1.0).abs() < 1e-5 && (m.x[1] - 1.0).abs() < 1e-5, "{m:?}");
        assert!(m.iterations < 100, "{m:?}");

        let x0: Vec<f64> = (0..10).map(|i| if i % 2 == 0 { -1.2 } else { 1.0 }).collect();
        let m = minimize(rosenbrock, x0, &options).unwrap();
        assert!(m.x.iter().all(|v| (v - 1.0).abs() < 1e-4), "{m:?}");
    }

    #[test]
    fn minimizes_an_ill_conditioned_quadratic_exactly() {
        // f = sum_i c_i (x_i - i)^2 with condition number 1e4 (SciPy's L-BFGS-B needs about 500
        // iterations for a gradient of 1e-6 here, as this one does).
        let c: Vec<f64> = (0..20).map(|i| 10f64.powf(i as f64 / 19.0 * 4.0)).collect();
        let quad = |x: &[f64], g: &mut [f64]| {
            let mut f = 0.0;
            for i in 0..x.len() {
                let r = x[i] - i as f64;
                f += c[i] * r * r;
                g[i] = 2.0 * c[i] * r;
            }
            f
        };
        let options = Options { max_iterations: 5000, gtol: 1e-9, ftol: 0.0, ..Options::default() };
        let m = minimize(quad, vec![0.0; 20], &options).unwrap();
        assert_eq!(m.stop, Stop::Gradient);
        for (i, v) in m.x.iter().enumerate() {
            assert!((v - i as f64).abs() < 1e-8, "x[{i}] = {v}");
        }
    }

    #[test]
    fn respects_the_iteration_limit() {
        let options = Options { max_iterations: 3, gtol: 1e-12, ..Options::default() };
        let m = minimize(rosenbrock, vec![-1.2, 1.0], &options).unwrap();
        assert_eq!(m.stop, Stop::MaxIterations);
        assert_eq!(m.iterations, 3);
        assert!(!m.converged());
    }

    #[test]
    fn starts_converged_at_a_stationary_point() {
        let m = minimize(rosenbrock, vec![1.0, 1.0], &Options::default()).unwrap();
        assert_eq!((m.iterations, m.stop), (0, Stop::Gradient));
    }

    #[test]
    fn steps_back_from_non_finite_regions() {
        // f = (x - 1)^2, undefined from 1.5 on. From 0.9 the first step, 1/|g| = 5, lands at 1.9.
        let f = |x: &[f64], g: &mut [f64]| {
            if x[0] >= 1.5 {
                g[0] = f64::NAN;
                return f64::NAN;
            }
            g[0] = 2.0 * (x[0] - 1.0);
            (x[0] - 1.0) * (x[0] - 1.0)
        };
        let options = Options { gtol: 1e-10, ..Options::default() };
        let m = minimize(f, vec![0.9], &options).unwrap();
        assert!(m.converged() && (m.x[0] - 1.0).abs() < 1e-8, "{m:?}");
        assert_eq!(
            minimize(|_: &[f64], _: &mut [f64]| f64::NAN, vec![0.0], &options),
            Err(LbfgsError::NonFiniteStart)
        );
    }
}
