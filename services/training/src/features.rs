//! Fits the preprocessing on the training rows (means, standard deviations, category levels), records
//! baseline statistics of every feature for drift detection, and builds the design matrix.

use crate::data::{Column, DataError, Dataset, Kind};
use crate::matrix::Matrix;
use crate::prep::{CategoricalFeature, NumericFeature, Preprocessing};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Quantiles recorded for each numeric feature.
pub const QUANTILES: [f64; 11] = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0];
/// Equal-width histogram bins between min and max.
pub const BINS: usize = 20;

/// Baseline statistics of one feature over the training rows, before preprocessing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureStats {
    pub name: String,
    pub count: usize,
    pub missing: usize,
    #[serde(flatten)]
    pub kind: StatsKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StatsKind {
    #[serde(rename_all = "camelCase")]
    Numeric {
        mean: f64,
        std: f64,
        min: f64,
        max: f64,
        /// `QUANTILES[i]` -> value.
        quantiles: Vec<(f64, f64)>,
        /// `BINS + 1` edges and `BINS` counts.
        histogram: Histogram,
    },
    Categorical {
        /// Level -> rows.
        frequencies: BTreeMap<String, usize>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
}

/// Learns the preprocessing from rows `train_from..` of `ds` (the rows after the holdout).
pub fn fit(ds: &Dataset, train_from: usize) -> Result<(Preprocessing, Vec<FeatureStats>), DataError> {
    let rows = ds.x.rows - train_from;
    let mut prep = Preprocessing::default();
    let mut stats = Vec::with_capacity(ds.columns.len());
    let mut empty = Vec::new();
    let mut column = Vec::with_capacity(rows);
    for (j, Column { name, kind }) in ds.columns.iter().enumerate() {
        column.clear();
        column.extend((train_from..ds.x.rows).map(|i| ds.x.data[i * ds.x.cols + j]).filter(|v| !v.is_nan()));
        let missing = rows - column.len();
        if column.is_empty() {
            empty.push(name.as_str());
            continue;
        }
        match kind {
            Kind::Numeric => {
                let n = column.len() as f64;
                let mean = column.iter().sum::<f64>() / n;
                let var = column.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = var.sqrt();
                prep.numeric.push(NumericFeature {
                    name: name.clone(),
                    fill: mean,
                    mean,
                    scale: if std > 0.0 && std.is_finite() { std } else { 1.0 },
                });
                let quantiles = quantiles(&mut column);
                let (min, max) = (quantiles[0].1, quantiles[QUANTILES.len() - 1].1);
                let histogram = histogram(&column, min, max);
                stats.push(FeatureStats {
                    name: name.clone(),
                    count: column.len(),
                    missing,
                    kind: StatsKind::Numeric { mean, std, min, max, quantiles, histogram },
                });
            }
            Kind::Categorical { values } => {
                let mut counts = vec![0usize; values.len()];
                for &v in &column {
                    counts[v as usize] += 1;
                }
                let mut levels: Vec<String> =
                    values.iter().zip(&counts).filter(|(_, c)| **c > 0).map(|(v, _)| v.clone()).collect();
                levels.sort();
                let frequencies = values
                    .iter()
                    .zip(&counts)
                    .filter(|(_, c)| **c > 0)
                    .map(|(v, c)| (v.clone(), *c))
                    .collect();
                prep.categorical.push(CategoricalFeature { name: name.clone(), levels });
                stats.push(FeatureStats {
                    name: name.clone(),
                    count: column.len(),
                    missing,
                    kind: StatsKind::Categorical { frequencies },
                });
            }
        }
    }
    if !empty.is_empty() {
        return Err(DataError::Invalid(format!(
            "feature(s) {} have no values in the training rows: every training row is missing them",
            empty.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((prep, stats))
}

/// `QUANTILES` with linear interpolation between order statistics (numpy's default), by selection
/// rather than a full sort: each order statistic is found in the part of the column above the previous one.
fn quantiles(values: &mut [f64]) -> Vec<(f64, f64)> {
    let last = values.len() - 1;
    let mut ranks: Vec<usize> = QUANTILES
        .iter()
        .flat_map(|q| {
            let pos = q * last as f64;
            [pos.floor() as usize, pos.ceil() as usize]
        })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let mut order = std::collections::BTreeMap::new();
    let mut from = 0;
    for &k in &ranks {
        let (_, v, _) = values[from..].select_nth_unstable_by(k - from, f64::total_cmp);
        order.insert(k, *v);
        from = k;
    }
    QUANTILES
        .iter()
        .map(|&q| {
            let pos = q * last as f64;
            let (lo, hi) = (order[&(pos.floor() as usize)], order[&(pos.ceil() as usize)]);
            (q, lo + (hi - lo) * (pos - pos.floor()))
        })
        .collect()
}

fn histogram(values: &[f64], min: f64, max: f64) -> Histogram {
    let width = (max - min) / BINS as f64;
    let edges = (0..=BINS).map(|i| if i == BINS { max } else { min + width * i as f64 }).collect();
    let mut counts = vec![0; BINS];
    for &v in values {
        let bin = if width > 0.0 { (((v - min) / width) as usize).min(BINS - 1) } else { 0 };
        counts[bin] += 1;
    }
    Histogram { edges, counts }
}

/// Turns the raw cells into the design matrix: in place when every feature is numeric (no copy of the
/// data), into a wider matrix when there are one-hot blocks.
pub fn design(ds: &mut Dataset, prep: &Preprocessing) -> Matrix {
    let numeric: Vec<(usize, &NumericFeature)> = ds
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == Kind::Numeric)
        .map(|(j, _)| j)
        .zip(&prep.numeric)
        .collect();
    let cols = ds.x.cols;
    if numeric.len() == cols {
        let factors: Vec<(f64, f64, f64)> =
            prep.numeric.iter().map(|f| (f.fill, f.mean, 1.0 / f.scale)).collect();
        for row in ds.x.data.chunks_exact_mut(cols) {
            for (v, &(fill, mean, inv)) in row.iter_mut().zip(&factors) {
                let x = if v.is_nan() { fill } else { *v };
                *v = (x - mean) * inv;
            }
        }
        return std::mem::replace(&mut ds.x, Matrix::zeros(0, cols));
    }
    // Raw dictionary index -> level position, per categorical column.
    let categorical: Vec<(usize, Vec<Option<usize>>)> = ds
        .columns
        .iter()
        .enumerate()
        .filter_map(|(j, c)| match &c.kind {
            Kind::Categorical { values } => Some((j, values)),
            Kind::Numeric => None,
        })
        .zip(&prep.categorical)
        .map(|((j, values), feature)| {
            (j, values.iter().map(|v| feature.levels.binary_search(v).ok()).collect::<Vec<_>>())
        })
        .collect();
    let width = prep.width();
    let mut out = Matrix::zeros(ds.x.rows, width);
    for i in 0..ds.x.rows {
        let raw = ds.x.row(i);
        let row = out.row_mut(i);
        for (k, (j, f)) in numeric.iter().enumerate() {
            let x = if raw[*j].is_nan() { f.fill } else { raw[*j] };
            row[k] = (x - f.mean) / f.scale;
        }
        let mut offset = numeric.len();
        for ((j, map), feature) in categorical.iter().zip(&prep.categorical) {
            let v = raw[*j];
            if !v.is_nan()
                && let Some(Some(level)) = map.get(v as usize)
            {
                row[offset + level] = 1.0;
            }
            offset += feature.levels.len();
        }
    }
    ds.x = Matrix::zeros(0, cols);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Spec, Task, read_csv};

    fn load(text: &str) -> Dataset {
        let spec = Spec { label: "y".into(), features: None, categorical: vec![], task: Task::Regression };
        read_csv(text.as_bytes(), &spec).unwrap()
    }

    #[test]
    fn numeric_features_are_imputed_and_standardized_in_place() {
        // Row 0 is the holdout row and must not influence the fit.
        let mut ds = load("a,b,y\n100,100,0\n1,2,1\n3,NA,2\n5,6,3\n");
        let (prep, stats) = fit(&ds, 1).unwrap();
        assert_eq!(prep.numeric[0].mean, 3.0);
        assert!((prep.numeric[0].scale - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(prep.numeric[1].fill, 4.0);
        assert_eq!(stats[1].missing, 1);
        let StatsKind::Numeric { quantiles, histogram, .. } = &stats[0].kind else { panic!() };
        assert_eq!(quantiles[5], (0.5, 3.0));
        assert_eq!(histogram.counts.iter().sum::<usize>(), 3);
        let x = design(&mut ds, &prep);
        assert_eq!(x.row(2)[1], 0.0, "a missing value becomes the mean, 0 after scaling");
        assert!((x.row(1)[0] + 2.0 / (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn string_features_are_one_hot_over_the_training_levels() {
        let mut ds = load("c,a,y\nzebra,1,0\nred,2,1\nblue,3,2\nred,4,3\n");
        let (prep, _) = fit(&ds, 1).unwrap();
        assert_eq!(prep.categorical[0].levels, ["blue", "red"]);
        let x = design(&mut ds, &prep);
        assert_eq!(x.cols, 3);
        assert_eq!(&x.row(0)[1..], &[0.0, 0.0], "a level unseen in training encodes as zeros");
        assert_eq!(&x.row(1)[1..], &[0.0, 1.0]);
        assert_eq!(&x.row(2)[1..], &[1.0, 0.0]);
    }

    #[test]
    fn quantiles_by_selection_match_a_sort() {
        let mut state = 7u64;
        let mut values: Vec<f64> = (0..1001)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 53) as f64
            })
            .collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        for (q, v) in quantiles(&mut values) {
            let pos = q * 1000.0;
            let (lo, hi) = (sorted[pos.floor() as usize], sorted[pos.ceil() as usize]);
            assert_eq!(v, lo + (hi - lo) * pos.fract(), "q {q}");
        }
        assert_eq!(quantiles(&mut [3.0, 1.0])[5], (0.5, 2.0));
        assert_eq!(quantiles(&mut [5.0])[10], (1.0, 5.0));
    }

    #[test]
    fn a_feature_missing_in_every_training_row_is_refused() {
        let ds = load("a,b,y\n1,5,0\n2,NA,1\n3,NA,2\n");
        let e = fit(&ds, 1).unwrap_err().to_string();
        assert!(e.contains("\"b\" have no values in the training rows"), "{e}");
    }
}
