use super::*;
use crate::matrix::{Matrix, MatrixView};
use crate::metrics;
use crate::network::{Dense, Head};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 40 rows, 3 features, generated the same way in Python for the scikit-learn references:
/// ```python
/// i = np.arange(40.0)
/// x0 = np.sin(0.37*i + 0.1)*1.5; x1 = np.cos(0.91*i); x2 = ((np.arange(40)*7) % 11)/5.0 - 1.0
/// yb = (x0 + 0.5*x1 - 0.8*x2 + 0.9*np.sin(2.3*i + 0.5) > 0)
/// ym = np.column_stack([x0 + 0.6*np.sin(1.7*i), x1 - x2 + 0.6*np.cos(1.3*i), 0.3 + 0.6*np.sin(3.1*i + 1)]).argmax(1)
/// yv = 2*x0 - x1 + 0.5*x2 + 0.3*np.sin(5.3*i) + 3
/// ```
struct Small {
    x: Matrix,
    binary: Vec<u32>,
    multi: Vec<u32>,
    values: Vec<f64>,
}

fn small() -> Small {
    let n = 40;
    let mut x = Matrix::zeros(n, 3);
    let (mut binary, mut multi, mut values) = (vec![], vec![], vec![]);
    for r in 0..n {
        let i = r as f64;
        let x0 = (0.37 * i + 0.1).sin() * 1.5;
        let x1 = (0.91 * i).cos();
        let x2 = ((r * 7) % 11) as f64 / 5.0 - 1.0;
        x.row_mut(r).copy_from_slice(&[x0, x1, x2]);
        binary.push(u32::from(x0 + 0.5 * x1 - 0.8 * x2 + 0.9 * (2.3 * i + 0.5).sin() > 0.0));
        let s =
            [x0 + 0.6 * (1.7 * i).sin(), x1 - x2 + 0.6 * (1.3 * i).cos(), 0.3 + 0.6 * (3.1 * i + 1.0).sin()];
        multi.push(metrics::argmax(&s) as u32);
        values.push(2.0 * x0 - x1 + 0.5 * x2 + 0.3 * (5.3 * i).sin() + 3.0);
    }
    Small { x, binary, multi, values }
}

fn params(l2: f64, tolerance: f64) -> Params {
    Params { l2: Some(l2), tolerance: Some(tolerance), max_iterations: Some(10_000), ..Params::default() }
}

/// `coef` as scikit-learn prints it (`[outputs][inputs]`) against a Dense's `[inputs x outputs]`.
fn assert_coefficients(net: &Network, coef: &[&[f64]], intercept: &[f64], tol: f64) {
    let d = &net.output;
    assert_eq!((d.outputs, d.inputs), (coef.len(), coef[0].len()));
    for (c, row) in coef.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let got = d.weights[j * d.outputs + c];
            assert!((got - v).abs() < tol, "w[{j}][{c}] = {got}, scikit-learn {v}");
        }
    }
    for (got, v) in d.bias.iter().zip(intercept) {
        assert!((got - v).abs() < tol, "b = {got}, scikit-learn {v}");
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

// References: scikit-learn 1.9.1, LogisticRegression(C=1/l2, tol=1e-10, max_iter=10000).fit(X, y).
const BINARY_L2_1: ([f64; 3], f64) =
    ([2.2417528204752, 1.2391668599650927, -0.47096818716923494], -0.2606161027156149);
const BINARY_L2_01: ([f64; 3], f64) =
    ([4.325473583885713, 3.2959837084676242, -1.1327870536512246], -0.5733831694847296);
const MULTI_L2_1: ([[f64; 3]; 3], [f64; 3]) = (
    [
        [1.7949973585671606, -0.554747296910601, -0.04880831427888685],
        [-1.0651297781294138, 1.307213883538611, -1.0045959101955535],
        [-0.7298675804377471, -0.7524665866280099, 1.0534042244744404],
    ],
    [-0.5117220998568011, 0.12039057397996798, 0.391331525876835],
);
const MULTI_L2_01: ([[f64; 3]; 3], [f64; 3]) = (
    [
        [3.499461970159951, -1.5138554109028401, 0.22629764980102127],
        [-2.375394116650876, 3.2108696432388055, -2.592519840360146],
        [-1.124067853509075, -1.697014232335968, 2.366222190559126],
    ],
    [-1.0959269754963297, -0.14994840943369184, 1.2458753849300215],
);

#[test]
fn binary_logistic_regression_matches_scikit_learn() {
    let d = small();
    let target = Target::Classes { y: &d.binary, n_classes: 2 };
    for (l2, (coef, intercept)) in [(1.0, BINARY_L2_1), (0.1, BINARY_L2_01)] {
        let fit = fit(Algorithm::LogisticRegression, d.x.view().into(), target, &params(l2, 1e-10)).unwrap();
        assert_eq!(fit.network.head, Head::Logistic);
        assert!(fit.converged && fit.iterations < 100, "{fit:?}");
        assert_coefficients(&fit.network, &[&coef], &[intercept], 1e-6);

        // With the default tolerance the probabilities agree to well within 1e-3.
        let reference = Network {
            hidden: vec![],
            output: Dense { inputs: 3, outputs: 1, weights: coef.to_vec(), bias: vec![intercept] },
            head: Head::Logistic,
        };
        let p = Params { l2: Some(l2), ..Params::default() };
        let quick = fit_default_tol(Algorithm::LogisticRegression, &d.x, target, &p);
        let diff =
            max_abs_diff(&quick.network.predict(d.x.view().into()), &reference.predict(d.x.view().into()));
        assert!(diff < 1e-3, "l2 {l2}: probabilities differ by {diff}");
    }
}

fn fit_default_tol(algorithm: Algorithm, x: &Matrix, target: Target<'_>, p: &Params) -> Fit {
    let fit = fit(algorithm, x.view().into(), target, p).unwrap();
    assert!(fit.converged, "{fit:?}");
    fit
}

#[test]
fn multinomial_logistic_regression_matches_scikit_learn() {
    let d = small();
    let target = Target::Classes { y: &d.multi, n_classes: 3 };
    for (l2, (coef, intercept)) in [(1.0, MULTI_L2_1), (0.1, MULTI_L2_01)] {
        let fit = fit(Algorithm::LogisticRegression, d.x.view().into(), target, &params(l2, 1e-10)).unwrap();
        assert_eq!(fit.network.head, Head::Softmax);
        assert!(fit.converged, "{fit:?}");
        let rows: Vec<&[f64]> = coef.iter().map(|r| &r[..]).collect();
        assert_coefficients(&fit.network, &rows, &intercept, 1e-6);

        let mut weights = vec![0.0; 9];
        for (c, row) in coef.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                weights[j * 3 + c] = *v;
            }
        }
        let reference = Network {
            hidden: vec![],
            output: Dense { inputs: 3, outputs: 3, weights, bias: intercept.to_vec() },
            head: Head::Softmax,
        };
        let p = Params { l2: Some(l2), ..Params::default() };
        let quick = fit_default_tol(Algorithm::LogisticRegression, &d.x, target, &p);
        let diff =
            max_abs_diff(&quick.network.predict(d.x.view().into()), &reference.predict(d.x.view().into()));
        assert!(diff < 1e-3, "l2 {l2}: probabilities differ by {diff}");
    }
}

#[test]
fn logistic_regression_on_many_rows_uses_every_chunk_and_is_deterministic() {
    let mut rng = StdRng::seed_from_u64(7);
    let (n, f) = (9_000, 4);
    let mut x = Matrix::zeros(n, f);
    let mut y = Vec::with_capacity(n);
    for r in 0..n {
        for v in x.row_mut(r) {
            *v = rng.random_range(-2.0..2.0);
        }
        let row = x.row(r);
        let z = 1.5 * row[0] - row[1] + 0.5 * row[3] + rng.random_range(-1.0..1.0);
        y.push(u32::from(z > 0.0));
    }
    let target = Target::Classes { y: &y, n_classes: 2 };
    let a = fit(Algorithm::LogisticRegression, x.view().into(), target, &Params::default()).unwrap();
    let b = fit(Algorithm::LogisticRegression, x.view().into(), target, &Params::default()).unwrap();
    assert_eq!(a, b);
    let proba = a.network.predict(x.view().into());
    let m = metrics::classification(&y, &proba, 2);
    assert!(m["accuracy"] > 0.85, "{m:?}");
    let w = &a.network.output.weights;
    assert!(w[0] > 2.0 && w[1] < -1.0 && w[2].abs() < 0.2, "{w:?}");
}

#[test]
fn unpenalized_logistic_regression_on_separable_data_stops_at_the_limit() {
    let x = Matrix::from_vec(6, 1, vec![-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]);
    let y = [0, 0, 0, 1, 1, 1];
    let p = Params { l2: Some(0.0), max_iterations: Some(50), ..Params::default() };
    let fit =
        fit(Algorithm::LogisticRegression, x.view().into(), Target::Classes { y: &y, n_classes: 2 }, &p)
            .unwrap();
    assert!(fit.iterations <= 50 && fit.final_loss < 1e-3, "{fit:?}");
    let proba = fit.network.predict(x.view().into());
    assert_eq!(metrics::classification(&y, &proba, 2)["accuracy"], 1.0);
}

#[test]
fn ridge_matches_scikit_learn() {
    let d = small();
    // scikit-learn 1.9.1: Ridge(alpha).fit(X, yv).coef_, .intercept_
    let cases = [
        (1.0, [1.9564102570041564, -1.1471687666478685, 0.46702209823019813], 3.0012451727450364),
        (0.0, [1.9963238116235542, -1.1981812143661403, 0.48837098763376224], 2.993966655096997),
        (10.0, [1.6542811107833788, -0.8332438933950973, 0.33880435502780787], 3.0548896840760564),
    ];
    for (l2, coef, intercept) in cases {
        let p = Params { l2: Some(l2), ..Params::default() };
        let fit = fit(Algorithm::LinearRegression, d.x.view().into(), Target::Values(&d.values), &p).unwrap();
        assert_eq!(fit.network.head, Head::Identity);
        assert_coefficients(&fit.network, &[&coef], &[intercept], 1e-10);
    }
}

#[test]
fn ridge_without_penalty_handles_collinear_columns() {
    // Two copies of a column and a one-hot pair (which sums to 1, like the intercept): the later column
    // of each dependent set gets weight 0 and the fit is exact.
    let n = 30;
    let mut x = Matrix::zeros(n, 4);
    let mut y = vec![];
    for r in 0..n {
        let a = (r as f64 * 0.7).sin();
        let hot = r % 2;
        x.row_mut(r).copy_from_slice(&[a, a, f64::from(hot == 0), f64::from(hot == 1)]);
        y.push(3.0 * a + if hot == 1 { 2.0 } else { 0.0 } + 1.0);
    }
    let p = Params { l2: Some(0.0), ..Params::default() };
    let fit = fit(Algorithm::LinearRegression, x.view().into(), Target::Values(&y), &p).unwrap();
    let w = &fit.network.output.weights;
    assert!((w[0] - 3.0).abs() < 1e-9 && w[1] == 0.0, "{w:?}");
    assert!((w[2] + 2.0).abs() < 1e-9 && w[3] == 0.0, "{w:?}");
    let pred = fit.network.predict(x.view().into());
    assert!(max_abs_diff(&pred, &y) < 1e-9);
}

/// Four Gaussian clusters at the corners of a square, labelled by XOR of the signs.
fn xor(n: usize, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Matrix::zeros(n, 2);
    let mut y = vec![];
    for r in 0..n {
        let (sa, sb) = (rng.random_bool(0.5), rng.random_bool(0.5));
        let a = if sa { 1.0 } else { -1.0 } + rng.random_range(-0.4..0.4);
        let b = if sb { 1.0 } else { -1.0 } + rng.random_range(-0.4..0.4);
        x.row_mut(r).copy_from_slice(&[a, b]);
        y.push(u32::from(sa != sb));
    }
    (x, y)
}

/// Three separated blobs in 4 dimensions, like iris's easy part.
fn blobs(n: usize, seed: u64) -> (Matrix, Vec<u32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let centers = [[2.0, 0.0, 0.0, 1.0], [-1.0, 2.0, 0.0, -1.0], [-1.0, -2.0, 1.0, 0.0]];
    let mut x = Matrix::zeros(n, 4);
    let mut y = vec![];
    for r in 0..n {
        let c = r % 3;
        for (v, m) in x.row_mut(r).iter_mut().zip(&centers[c]) {
            *v = m + rng.random_range(-0.9..0.9);
        }
        y.push(c as u32);
    }
    (x, y)
}

fn mlp_params(seed: u64) -> Params {
    Params {
        hidden_layers: Some(vec![16]),
        learning_rate: Some(0.01),
        batch_size: Some(32),
        seed,
        ..Params::default()
    }
}

#[test]
fn mlp_learns_xor() {
    let (x, y) = xor(400, 1);
    let fit = fit(Algorithm::Mlp, x.view().into(), Target::Classes { y: &y, n_classes: 2 }, &mlp_params(3))
        .unwrap();
    assert_eq!(fit.network.head, Head::Logistic);
    assert_eq!(fit.network.hidden.len(), 1);
    let (xt, yt) = xor(400, 2);
    let m = metrics::classification(&yt, &fit.network.predict(xt.view().into()), 2);
    assert!(m["accuracy"] > 0.97, "{m:?} after {} epochs", fit.iterations);
    // A linear model cannot do this.
    let lin = super::fit(
        Algorithm::LogisticRegression,
        x.view().into(),
        Target::Classes { y: &y, n_classes: 2 },
        &Params::default(),
    )
    .unwrap();
    let m = metrics::classification(&yt, &lin.network.predict(xt.view().into()), 2);
    assert!(m["accuracy"] < 0.7, "{m:?}");
}

#[test]
fn mlp_learns_three_classes_with_default_settings() {
    let (x, y) = blobs(300, 4);
    let p = Params { seed: 5, ..Params::default() };
    let fit = fit(Algorithm::Mlp, x.view().into(), Target::Classes { y: &y, n_classes: 3 }, &p).unwrap();
    assert_eq!(fit.network.head, Head::Softmax);
    assert_eq!(fit.network.hidden[0].outputs, 100);
    let (xt, yt) = blobs(300, 6);
    let m = metrics::classification(&yt, &fit.network.predict(xt.view().into()), 3);
    assert!(m["accuracy"] > 0.95, "{m:?}");
    assert!(fit.final_loss.is_finite() && fit.iterations >= 12, "{fit:?}");
}

#[test]
fn mlp_regression_fits_a_curve() {
    let mut rng = StdRng::seed_from_u64(9);
    let n = 600;
    let mut x = Matrix::zeros(n, 2);
    let mut y = vec![];
    for r in 0..n {
        let (a, b): (f64, f64) = (rng.random_range(-2.0..2.0), rng.random_range(-2.0..2.0));
        x.row_mut(r).copy_from_slice(&[a, b]);
        y.push(a * a - b);
    }
    let p = Params { hidden_layers: Some(vec![32]), learning_rate: Some(0.01), seed: 1, ..Params::default() };
    let fit = fit(Algorithm::Mlp, x.view().into(), Target::Values(&y), &p).unwrap();
    assert_eq!(fit.network.head, Head::Identity);
    let pred = fit.network.predict(x.view().into());
    let r2 = metrics::r2(&y, &pred);
    assert!(r2 > 0.95, "r2 {r2} after {} epochs", fit.iterations);
}

#[test]
fn mlp_is_deterministic_per_seed() {
    let (x, y) = xor(200, 8);
    let target = Target::Classes { y: &y, n_classes: 2 };
    let p = Params { max_iterations: Some(5), ..mlp_params(11) };
    let a = fit(Algorithm::Mlp, x.view().into(), target, &p).unwrap();
    let b = fit(Algorithm::Mlp, x.view().into(), target, &p).unwrap();
    assert_eq!(a, b);
    let c = fit(Algorithm::Mlp, x.view().into(), target, &Params { seed: 12, ..p.clone() }).unwrap();
    assert_ne!(a.network, c.network);
    assert_eq!((a.iterations, a.converged), (5, false));
}

#[test]
fn mlp_initializes_like_scikit_learn() {
    // Weights uniform within sqrt(6 / (fan_in + fan_out)); one epoch of a tiny learning rate barely
    // moves them.
    let (x, y) = blobs(60, 1);
    let p = Params {
        hidden_layers: Some(vec![50, 10]),
        max_iterations: Some(1),
        learning_rate: Some(1e-9),
        ..Params::default()
    };
    let fit = fit(Algorithm::Mlp, x.view().into(), Target::Classes { y: &y, n_classes: 3 }, &p).unwrap();
    let layers: Vec<&Dense> = fit.network.hidden.iter().chain([&fit.network.output]).collect();
    for layer in layers {
        let bound = (6.0 / (layer.inputs + layer.outputs) as f64).sqrt() + 1e-6;
        let all = layer.weights.iter().chain(&layer.bias);
        assert!(all.clone().all(|w| w.abs() <= bound));
        let largest = all.fold(0.0f64, |m, w| m.max(w.abs()));
        assert!(largest > 0.8 * bound, "{largest} vs {bound}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let d = small();
    let x = d.x.view().into();
    let classes = |y: &'static [u32], n_classes| Target::Classes { y, n_classes };
    let one_class: Vec<u32> = vec![1; 40];
    let all = Algorithm::ALL;
    for algorithm in all {
        let target = if algorithm == Algorithm::LinearRegression {
            Target::Values(&d.values)
        } else {
            Target::Classes { y: &d.binary, n_classes: 2 }
        };
        let p = Params::default();
        let empty = MatrixView { rows: 0, cols: 3, data: &[] }.into();
        let t0 = match target {
            Target::Values(_) => Target::Values(&[]),
            Target::Classes { .. } => classes(&[], 2),
        };
        assert!(
            matches!(fit(algorithm, empty, t0, &p), Err(FitError::InvalidData(_))),
            "{algorithm} no rows"
        );
        let short = match target {
            Target::Values(v) => Target::Values(&v[1..]),
            Target::Classes { y, n_classes } => Target::Classes { y: &y[1..], n_classes },
        };
        assert!(matches!(fit(algorithm, x, short, &p), Err(FitError::InvalidData(_))), "{algorithm} lengths");
        let broken = MatrixView { rows: 40, cols: 4, data: x.dense.data }.into();
        assert!(matches!(fit(algorithm, broken, target, &p), Err(FitError::InvalidData(_))));
        let mut nan = d.x.clone();
        nan.data[17] = f64::NAN;
        let e = fit(algorithm, nan.view().into(), target, &p).unwrap_err();
        assert!(e.to_string().contains("row 5"), "{e}");
        let negative = Params { l2: Some(-1.0), ..Params::default() };
        assert!(matches!(fit(algorithm, x, target, &negative), Err(FitError::InvalidHyperparameter { .. })));
    }
    for algorithm in [Algorithm::LogisticRegression, Algorithm::Mlp] {
        let p = Params::default();
        let e = fit(algorithm, x, Target::Classes { y: &one_class, n_classes: 2 }, &p).unwrap_err();
        assert!(e.to_string().contains("only one class"), "{e}");
        let e = fit(algorithm, x, Target::Classes { y: &d.binary, n_classes: 1 }, &p).unwrap_err();
        assert!(e.to_string().contains("at least 2 classes"), "{e}");
        let e = fit(algorithm, x, Target::Classes { y: &d.multi, n_classes: 2 }, &p).unwrap_err();
        assert!(e.to_string().contains("not below"), "{e}");
        let zero = Params { max_iterations: Some(0), ..Params::default() };
        assert!(fit(algorithm, x, Target::Classes { y: &d.binary, n_classes: 2 }, &zero).is_err());
    }
    let lr = fit(Algorithm::LogisticRegression, x, Target::Values(&d.values), &Params::default());
    assert!(matches!(lr, Err(FitError::InvalidData(_))));
    let ridge = fit(
        Algorithm::LinearRegression,
        x,
        Target::Classes { y: &d.binary, n_classes: 2 },
        &Params::default(),
    );
    assert!(matches!(ridge, Err(FitError::InvalidData(_))));

    let target = Target::Classes { y: &d.binary, n_classes: 2 };
    let hidden0 = Params { hidden_layers: Some(vec![8, 0]), ..Params::default() };
    let e = fit(Algorithm::Mlp, x, target, &hidden0).unwrap_err();
    assert!(e.to_string().contains("layer 2 has size 0"), "{e}");
    for layers in [vec![usize::MAX / 2, 3], vec![1 << 20]] {
        let huge = Params { hidden_layers: Some(layers), ..Params::default() };
        assert!(matches!(fit(Algorithm::Mlp, x, target, &huge), Err(FitError::InvalidHyperparameter { .. })));
    }
    for bad in [
        Params { batch_size: Some(0), ..Params::default() },
        Params { learning_rate: Some(0.0), ..Params::default() },
        Params { patience: Some(0), ..Params::default() },
        Params { tolerance: Some(f64::NAN), ..Params::default() },
    ] {
        assert!(
            matches!(fit(Algorithm::Mlp, x, target, &bad), Err(FitError::InvalidHyperparameter { .. })),
            "{bad:?}"
        );
    }
    let tiny = d.x.rows_slice(0, 10).into();
    let e =
        fit(Algorithm::Mlp, tiny, Target::Classes { y: &d.binary[..10], n_classes: 2 }, &Params::default());
    assert!(e.unwrap_err().to_string().contains("at least 11"));
    let huge_lr = Params { learning_rate: Some(1e300), ..mlp_params(1) };
    let v = fit(Algorithm::Mlp, x, Target::Values(&d.values), &huge_lr);
    assert!(matches!(v, Err(FitError::Diverged(_))), "{v:?}");
}

#[test]
fn resolved_fills_in_the_defaults() {
    let r = resolved(Algorithm::LogisticRegression, &Params::default());
    let expect = [("l2", "1"), ("maxIterations", "100"), ("tolerance", "0.0001")];
    assert_eq!(r, expect.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    assert_eq!(resolved(Algorithm::LinearRegression, &Params::default())["l2"], "1");
    let r =
        resolved(Algorithm::Mlp, &Params { hidden_layers: Some(vec![64, 32]), seed: 4, ..Params::default() });
    assert_eq!(r["hiddenLayers"], "64,32");
    assert_eq!(r["l2"], "0.0001");
    assert_eq!(r["learningRate"], "0.001");
    assert_eq!(r["batchSize"], "200");
    assert_eq!(r["maxIterations"], "200");
    assert_eq!(r["patience"], "10");
    assert_eq!(r["seed"], "4");
}

#[test]
fn params_and_algorithms_read_their_wire_names() {
    let p: Params = serde_json::from_str(r#"{"l2": 0.5, "hiddenLayers": [8], "maxIterations": 3}"#).unwrap();
    assert_eq!(
        (p.l2, p.hidden_layers.as_deref(), p.max_iterations, p.seed),
        (Some(0.5), Some(&[8][..]), Some(3), 0)
    );
    let a: Algorithm = serde_json::from_str(r#""logisticRegression""#).unwrap();
    assert_eq!(a, Algorithm::LogisticRegression);
    assert_eq!(serde_json::to_string(&Algorithm::Mlp).unwrap(), r#""mlp""#);
    assert_eq!("linearRegression".parse::<Algorithm>().unwrap(), Algorithm::LinearRegression);
    assert!("svm".parse::<Algorithm>().is_err());

    use mizzen_common::training::{Hyperparameter as H, Hyperparameters};
    let strings: Hyperparameters =
        [(H::HiddenLayers, "64, 32"), (H::L2, "1e-3"), (H::Seed, "9"), (H::BatchSize, "50")]
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
    let p = Params::from_hyperparameters(&strings).unwrap();
    assert_eq!(p.hidden_layers, Some(vec![64, 32]));
    assert_eq!((p.l2, p.seed, p.batch_size), (Some(1e-3), 9, Some(50)));
    let bad: Hyperparameters = [(H::L2, "much".to_string())].into();
    assert!(Params::from_hyperparameters(&bad).unwrap_err().to_string().contains("l2"));
    // An unknown name cannot be put in the map at all: it is refused where names are read.
    assert!("momentum".parse::<H>().is_err());
}
