//! The trials of a hyperparameter search, computed once by the operator and handed to every trainer pod,
//! so trial `i` (the pod's completion index) trains with `trials[i]`.
//!
//! `grid` walks the cartesian product of each parameter's values (the first parameter varies slowest),
//! up to `maxTrials`; `random` draws `maxTrials` points with the search's seed. Uniform and logUniform
//! ranges give `steps` evenly spaced points in a grid; integer hyperparameters are rounded.

use crate::api::v1alpha1::training_job::{SearchAlgorithm, SearchParameter, SearchSpec};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use std::collections::BTreeMap;

/// Hyperparameters whose values are integers.
const INTEGER: &[&str] = &["maxIterations", "batchSize", "patience", "seed"];

/// One trial's hyperparameters, by name.
pub type Trial = BTreeMap<String, String>;

pub fn trials(search: &SearchSpec) -> Vec<Trial> {
    let max = search.max_trials.max(1) as usize;
    match search.algorithm {
        SearchAlgorithm::Grid => {
            let axes: Vec<(&str, Vec<String>)> =
                search.parameters.iter().map(|p| (p.name.as_str(), grid_values(p))).collect();
            let total: usize = axes.iter().map(|(_, v)| v.len().max(1)).product();
            (0..total.min(max))
                .map(|mut i| {
                    let mut trial = Trial::new();
                    for (name, values) in axes.iter().rev() {
                        let n = values.len().max(1);
                        if let Some(v) = values.get(i % n) {
                            trial.insert((*name).to_string(), v.clone());
                        }
                        i /= n;
                    }
                    trial
                })
                .collect()
        }
        SearchAlgorithm::Random => {
            let mut rng = StdRng::seed_from_u64(search.seed.max(0) as u64);
            (0..max)
                .map(|_| search.parameters.iter().map(|p| (p.name.clone(), draw(p, &mut rng))).collect())
                .collect()
        }
    }
}

/// Integers rounded; other values to 10 significant digits, so a grid reads `0.1`, not `0.10000000000000002`.
fn format(name: &str, v: f64) -> String {
    if INTEGER.contains(&name) {
        format!("{}", v.round() as i64)
    } else {
        let short: f64 = format!("{v:.9e}").parse().unwrap_or(v);
        format!("{short}")
    }
}

fn grid_values(p: &SearchParameter) -> Vec<String> {
    if let Some(values) = &p.categorical {
        return values.clone();
    }
    let steps = p.steps.unwrap_or(2).max(2) as usize;
    let mut out: Vec<String> = Vec::with_capacity(steps);
    let mut push = |v: f64| {
        let s = format(&p.name, v);
        if !out.contains(&s) {
            out.push(s);
        }
    };
    if let Some(r) = &p.uniform {
        for k in 0..steps {
            push(r.min + (r.max - r.min) * k as f64 / (steps - 1) as f64);
        }
    } else if let Some(r) = &p.log_uniform {
        let (a, b) = (r.min.ln(), r.max.ln());
        for k in 0..steps {
            push((a + (b - a) * k as f64 / (steps - 1) as f64).exp());
        }
    }
    out
}

fn draw(p: &SearchParameter, rng: &mut StdRng) -> String {
    if let Some(values) = &p.categorical {
        return values[rng.random_range(0..values.len())].clone();
    }
    let u: f64 = rng.random();
    if let Some(r) = &p.uniform {
        format(&p.name, r.min + (r.max - r.min) * u)
    } else if let Some(r) = &p.log_uniform {
        let (a, b) = (r.min.ln(), r.max.ln());
        format(&p.name, (a + (b - a) * u).exp())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(yaml: &str) -> SearchSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn a_grid_walks_every_combination_in_order_up_to_max_trials() {
        let s = search(
            "algorithm: grid\nmaxTrials: 100\nobjective: {metric: accuracy}\nparameters:\n\
             - {name: l2, logUniform: {min: 0.01, max: 1.0}, steps: 3}\n\
             - {name: hiddenLayers, categorical: ['16', '32,16']}\n",
        );
        let t = trials(&s);
        assert_eq!(t.len(), 6);
        let pairs: Vec<(String, String)> =
            t.iter().map(|t| (t["l2"].clone(), t["hiddenLayers"].clone())).collect();
        assert_eq!(pairs[0], ("0.01".into(), "16".into()));
        assert_eq!(pairs[1], ("0.01".into(), "32,16".into()));
        assert_eq!(pairs[2].1, "16");
        assert!((pairs[2].0.parse::<f64>().unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(pairs[5], ("1".into(), "32,16".into()));
        let mut capped = s.clone();
        capped.max_trials = 4;
        assert_eq!(trials(&capped), t[..4]);
    }

    #[test]
    fn random_draws_are_seeded_in_range_and_integers_are_rounded() {
        let s = search(
            "algorithm: random\nmaxTrials: 50\nseed: 7\nobjective: {metric: f1}\nparameters:\n\
             - {name: learningRate, logUniform: {min: 0.0001, max: 0.1}}\n\
             - {name: batchSize, uniform: {min: 16, max: 256}}\n\
             - {name: l2, categorical: ['0.1', '1']}\n",
        );
        let t = trials(&s);
        assert_eq!(t.len(), 50);
        assert_eq!(t, trials(&s), "the same seed gives the same trials");
        let mut other = s.clone();
        other.seed = 8;
        assert_ne!(t, trials(&other));
        for trial in &t {
            let lr: f64 = trial["learningRate"].parse().unwrap();
            assert!((0.0001..=0.1).contains(&lr), "{lr}");
            let b: i64 = trial["batchSize"].parse().unwrap();
            assert!((16..=256).contains(&b));
            assert!(["0.1", "1"].contains(&trial["l2"].as_str()));
        }
        // Log-uniform draws cover the decades rather than crowding at the top.
        let small = t.iter().filter(|t| t["learningRate"].parse::<f64>().unwrap() < 0.001).count();
        assert!(small >= 5, "{small}");
    }
}
