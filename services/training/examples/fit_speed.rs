//! Times logistic regression on a synthetic standardized table, for comparison with scikit-learn:
//!
//! ```sh
//! cargo run --release -p mizzen-train --example fit_speed -- 1000000 /tmp/fit_speed
//! $VENV/bin/python services/training/examples/fit_speed.py /tmp/fit_speed
//! ```
//!
//! Arguments: training rows (default 1,000,000), optionally a directory to write the data to (raw
//! little-endian `f64` / `u32` files the Python script reads), and optionally `mlp` to also time the MLP
//! (default settings) on the first 100,000 training rows. 200,000 more rows are the test set.

use mizzen_train::learn::{Algorithm, Params, Target, fit};
use mizzen_train::matrix::Matrix;
use mizzen_train::metrics;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;

const FEATURES: usize = 20;
const TEST_ROWS: usize = 200_000;
const CLASSES: usize = 4;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dump = args.get(2).filter(|a| *a != "mlp");
    let with_mlp = args.iter().skip(2).any(|a| a == "mlp");
    let total = n + TEST_ROWS;
    let mut rng = StdRng::seed_from_u64(42);
    let mut normal = move || {
        // Box-Muller.
        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let w_true: Vec<f64> = (0..FEATURES).map(|j| if j % 4 == 3 { 0.0 } else { normal() * 0.5 }).collect();
    let w_multi: Vec<f64> = (0..FEATURES * CLASSES).map(|_| normal() * 0.4).collect();
    let mut x = Matrix::zeros(total, FEATURES);
    let (mut y_bin, mut y_multi) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for r in 0..total {
        let row = x.row_mut(r);
        for (j, v) in row.iter_mut().enumerate() {
            // Correlated, shifted, scaled columns, standardized below.
            *v = normal() * (1.0 + j as f64) + 3.0;
        }
        for j in (1..FEATURES).rev() {
            row[j] += 0.5 * row[j - 1];
        }
    }
    // Standardize with the training rows' statistics, as the trainer's preprocessing does.
    for j in 0..FEATURES {
        let mean = (0..n).map(|r| x.row(r)[j]).sum::<f64>() / n as f64;
        let var = (0..n).map(|r| (x.row(r)[j] - mean).powi(2)).sum::<f64>() / n as f64;
        let sd = var.sqrt();
        for r in 0..total {
            let v = &mut x.row_mut(r)[j];
            *v = (*v - mean) / sd;
        }
    }
    let mut label_rng = StdRng::seed_from_u64(7);
    for r in 0..total {
        let row = x.row(r);
        let z: f64 = 0.3 + row.iter().zip(&w_true).map(|(a, b)| a * b).sum::<f64>();
        y_bin.push(u32::from(label_rng.random::<f64>() < 1.0 / (1.0 + (-z).exp())));
        let scores: Vec<f64> = (0..CLASSES)
            .map(|c| row.iter().zip(&w_multi[c * FEATURES..]).map(|(a, b)| a * b).sum())
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let mut u = label_rng.random::<f64>() * e.iter().sum::<f64>();
        let mut c = 0;
        while c + 1 < CLASSES && u >= e[c] {
            u -= e[c];
            c += 1;
        }
        y_multi.push(c as u32);
    }
    if let Some(dir) = dump {
        std::fs::create_dir_all(dir)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(format!("{dir}/x.f64"))?);
        for v in &x.data {
            out.write_all(&v.to_le_bytes())?;
        }
        out.flush()?;
        for (name, y) in [("y_bin.u32", &y_bin), ("y_multi.u32", &y_multi)] {
            let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(format!("{dir}/{name}"), bytes)?;
        }
        std::fs::write(format!("{dir}/shape.txt"), format!("{n} {TEST_ROWS} {FEATURES}\n"))?;
    }

    let train = x.rows_slice(0, n).into();
    let test = x.rows_slice(n, total).into();
    println!("{n} x {FEATURES}, {} threads", std::thread::available_parallelism().map_or(1, |p| p.get()));
    for (name, y, k) in [("binary", &y_bin, 2), ("multinomial", &y_multi, CLASSES)] {
        let target = Target::Classes { y: &y[..n], n_classes: k };
        let start = Instant::now();
        let fitted = fit(Algorithm::LogisticRegression, train, target, &Params::default())?;
        let seconds = start.elapsed().as_secs_f64();
        let m = metrics::classification(&y[n..], &fitted.network.predict(test), k);
        println!(
            "{name:12} fit {seconds:.3}s  iterations {}  converged {}  loss {:.6}  test accuracy {:.4}  logLoss {:.4}",
            fitted.iterations, fitted.converged, fitted.final_loss, m["accuracy"], m["logLoss"]
        );
    }
    if with_mlp {
        let m = n.min(100_000);
        for (name, y, k) in [("binary", &y_bin, 2), ("multinomial", &y_multi, CLASSES)] {
            let target = Target::Classes { y: &y[..m], n_classes: k };
            let start = Instant::now();
            let fitted = fit(Algorithm::Mlp, x.rows_slice(0, m).into(), target, &Params::default())?;
            let seconds = start.elapsed().as_secs_f64();
            let metrics = metrics::classification(&y[n..], &fitted.network.predict(test), k);
            println!(
                "mlp {name:12} {m} rows fit {seconds:.3}s  epochs {}  test accuracy {:.4}",
                fitted.iterations, metrics["accuracy"]
            );
        }
    }
    Ok(())
}
