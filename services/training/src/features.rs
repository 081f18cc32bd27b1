//! Fits the preprocessing on the training rows (means, standard deviations, category levels), records
//! baseline statistics of every feature for drift detection, and builds the design matrix.

use crate::data::{Column, DataError, Dataset, Kind};
use crate::matrix::{Design, Matrix, NO_LEVEL};
use crate::prep::{CategoricalFeature, NumericFeature, Preprocessing};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Quantiles recorded for each numeric feature.
pub const QUANTILES: [f64; 11] = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0];
/// Equal-width histogram bins between min and max.
pub const BINS: usize = 20;

/// Training rows the quantiles and histograms are computed on at most (evenly spaced over the training
/// rows, which the split has shuffled); the other statistics use every training row.
pub const SAMPLE_ROWS: usize = 100_000;
/// Rows per chunk of the passes over the data: fixed, so the sums do not depend on the thread count.
const CHUNK_ROWS: usize = 1 << 14;

/// Baseline statistics of one feature over the training rows, before preprocessing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureStats {
    pub name: String,
    /// Training rows with a value, and without.
    pub count: usize,
    pub missing: usize,
    /// The training rows the distribution comes from: for a numeric feature, the rows of the quantiles
    /// (but the 0 and 1 quantiles, the exact min and max) and of the histogram counts, at most
    /// [`SAMPLE_ROWS`] evenly spaced ones; for a categorical feature, all of them.
    pub sample_rows: usize,
    #[serde(flatten)]
    pub kind: StatsKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StatsKind {
    #[serde(rename_all = "camelCase")]
    Numeric {
        /// Over all training rows, like `count`, `missing`, `min` and `max`.
        mean: f64,
        std: f64,
        min: f64,
        max: f64,
        /// `QUANTILES[i]` -> value.
        quantiles: Vec<(f64, f64)>,
        /// `BINS + 1` edges (from `min` to `max`) and `BINS` counts.
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

/// What a thread learns about the columns from its rows (exact whatever the order: counts and extremes).
struct Tally {
    /// Per column: values present.
    count: Vec<usize>,
    min: Vec<f64>,
    max: Vec<f64>,
    /// Per column: rows per level (categorical columns; empty for numeric ones).
    levels: Vec<Vec<usize>>,
}

/// Runs `kernel(start, end, state)` on fixed chunks of the `rows` rows, spread over the available threads
/// (each with its own `init()` state); returns the states and the kernel's results in chunk order.
fn over_chunks<S: Send, R: Send>(
    rows: usize,
    init: impl Fn() -> S + Sync,
    kernel: impl Fn(usize, usize, &mut S) -> R + Sync,
) -> (Vec<S>, Vec<R>) {
    let n_chunks = rows.div_ceil(CHUNK_ROWS).max(1);
    let bound = |c: usize| c * rows / n_chunks;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(n_chunks);
    let work = |t: usize| {
        let mut state = init();
        let (from, to) = (t * n_chunks / threads, (t + 1) * n_chunks / threads);
        let results: Vec<R> = (from..to).map(|c| kernel(bound(c), bound(c + 1), &mut state)).collect();
        (state, results)
    };
    let parts: Vec<(S, Vec<R>)> = if threads <= 1 {
        vec![work(0)]
    } else {
        std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || work(t))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    };
    let mut states = Vec::with_capacity(parts.len());
    let mut results = Vec::with_capacity(n_chunks);
    for (state, r) in parts {
        states.push(state);
        results.extend(r);
    }
    (states, results)
}

/// `f(i, scratch)` for `i` in `0..n`, in order, spread over the available threads when `parallel` (each
/// with its own `scratch()`).
fn map_parallel<W, R: Send>(
    n: usize,
    parallel: bool,
    scratch: impl Fn() -> W + Sync,
    f: impl Fn(usize, &mut W) -> R + Sync,
) -> Vec<R> {
    let threads =
        if parallel { std::thread::available_parallelism().map_or(1, |t| t.get()).min(n) } else { 1 };
    let work = |t: usize| {
        let mut w = scratch();
        (t * n / threads..(t + 1) * n / threads).map(|i| f(i, &mut w)).collect::<Vec<R>>()
    };
    if threads <= 1 {
        return work(0);
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || work(t))).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// Learns the preprocessing from rows `train_from..` of `ds` (the rows after the holdout).
///
/// Two passes over the rows (in parallel, in fixed chunks) give the counts, extremes and level counts,
/// then the sums of squared deviations from the means; the quantiles and histograms come from at most
/// [`SAMPLE_ROWS`] evenly spaced rows. No copy of the data is made.
pub fn fit(ds: &Dataset, train_from: usize) -> Result<(Preprocessing, Vec<FeatureStats>), DataError> {
    fit_sampled(ds, train_from, SAMPLE_ROWS)
}

/// [`fit`] with the quantiles and histograms on at most `max_sample` rows.
fn fit_sampled(
    ds: &Dataset,
    train_from: usize,
    max_sample: usize,
) -> Result<(Preprocessing, Vec<FeatureStats>), DataError> {
    let rows = ds.x.rows - train_from;
    let cols = ds.x.cols;
    let data = &ds.x.data[train_from * cols..];
    let numeric: Vec<bool> = ds.columns.iter().map(|c| c.kind == Kind::Numeric).collect();
    let row = |i: usize| &data[i * cols..(i + 1) * cols];

    // Pass 1: counts, extremes and level counts per thread; sums per chunk.
    let (tallies, sums) = over_chunks(
        rows,
        || Tally {
            count: vec![0; cols],
            min: vec![f64::INFINITY; cols],
            max: vec![f64::NEG_INFINITY; cols],
            levels: ds
                .columns
                .iter()
                .map(|c| match &c.kind {
                    Kind::Categorical { values } => vec![0; values.len()],
                    Kind::Numeric => Vec::new(),
                })
                .collect(),
        },
        |start, end, t| {
            let mut sum = vec![0.0; cols];
            for i in start..end {
                for (j, &v) in row(i).iter().enumerate() {
                    if v.is_nan() {
                        continue;
                    }
                    t.count[j] += 1;
                    if numeric[j] {
                        sum[j] += v;
                        t.min[j] = t.min[j].min(v);
                        t.max[j] = t.max[j].max(v);
                    } else {
                        t.levels[j][v as usize] += 1;
                    }
                }
            }
            sum
        },
    );
    let mut tally = Tally {
        count: vec![0; cols],
        min: vec![f64::INFINITY; cols],
        max: vec![f64::NEG_INFINITY; cols],
        levels: vec![Vec::new(); cols],
    };
    for t in tallies {
        for j in 0..cols {
            tally.count[j] += t.count[j];
            tally.min[j] = tally.min[j].min(t.min[j]);
            tally.max[j] = tally.max[j].max(t.max[j]);
            if tally.levels[j].is_empty() {
                tally.levels[j] = t.levels[j].clone();
            } else {
                for (a, b) in tally.levels[j].iter_mut().zip(&t.levels[j]) {
                    *a += b;
                }
            }
        }
    }
    let means: Vec<f64> = (0..cols)
        .map(|j| {
            let sum = sums.iter().fold(0.0, |acc, s| acc + s[j]);
            sum / tally.count[j].max(1) as f64
        })
        .collect();

    // Pass 2: squared deviations from the means (two passes: no cancellation), per chunk.
    let (_, squares) = over_chunks(
        rows,
        || (),
        |start, end, _| {
            let mut sq = vec![0.0; cols];
            for i in start..end {
                for (j, &v) in row(i).iter().enumerate() {
                    if numeric[j] && !v.is_nan() {
                        sq[j] += (v - means[j]) * (v - means[j]);
                    }
                }
            }
            sq
        },
    );

    let sample = rows.min(max_sample.max(1));
    // Quantiles and histograms of the numeric columns, spread over threads (each column on its own).
    let mut distributions = map_parallel(cols, rows >= CHUNK_ROWS, Vec::new, |j, column| {
        if !numeric[j] || tally.count[j] == 0 {
            return None;
        }
        let (min, max) = (tally.min[j], tally.max[j]);
        column.clear();
        column.extend((0..sample).map(|k| row(k * rows / sample)[j]).filter(|v| !v.is_nan()));
        let mut sample_rows = sample;
        if column.is_empty() {
            // Values only outside the sample: use them all.
            column.extend((0..rows).map(|i| row(i)[j]).filter(|v| !v.is_nan()));
            sample_rows = rows;
        }
        let mut quantiles = quantiles(column);
        quantiles[0].1 = min;
        quantiles[QUANTILES.len() - 1].1 = max;
        Some((sample_rows, quantiles, histogram(column, min, max)))
    });
    let mut prep = Preprocessing::default();
    let mut stats = Vec::with_capacity(ds.columns.len());
    let mut empty = Vec::new();
    for (j, Column { name, kind }) in ds.columns.iter().enumerate() {
        let count = tally.count[j];
        let missing = rows - count;
        if count == 0 {
            empty.push(name.as_str());
            continue;
        }
        match kind {
            Kind::Numeric => {
                let mean = means[j];
                let var = squares.iter().fold(0.0, |acc, s| acc + s[j]) / count as f64;
                let std = var.sqrt();
                prep.numeric.push(NumericFeature {
                    name: name.clone(),
                    fill: mean,
                    mean,
                    scale: if std > 0.0 && std.is_finite() { std } else { 1.0 },
                });
                let (min, max) = (tally.min[j], tally.max[j]);
                let Some((sample_rows, quantiles, histogram)) = distributions[j].take() else {
                    unreachable!("numeric columns with values have a distribution")
                };
                stats.push(FeatureStats {
                    name: name.clone(),
                    count,
                    missing,
                    sample_rows,
                    kind: StatsKind::Numeric { mean, std, min, max, quantiles, histogram },
                });
            }
            Kind::Categorical { values } => {
                let counts = &tally.levels[j];
                let mut levels: Vec<String> =
                    values.iter().zip(counts).filter(|(_, c)| **c > 0).map(|(v, _)| v.clone()).collect();
                levels.sort();
                let frequencies = values
                    .iter()
                    .zip(counts)
                    .filter(|(_, c)| **c > 0)
                    .map(|(v, c)| (v.clone(), *c))
                    .collect();
                prep.categorical.push(CategoricalFeature { name: name.clone(), levels });
                stats.push(FeatureStats {
                    name: name.clone(),
                    count,
                    missing,
                    sample_rows: rows,
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
/// rather than a full sort: the middle order statistic first, then those below it among the values below
/// it and those above among the values above.
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
    let mut order = BTreeMap::new();
    select_ranks(values, &ranks, 0, &mut order);
    QUANTILES
        .iter()
        .map(|&q| {
            let pos = q * last as f64;
            let (lo, hi) = (order[&(pos.floor() as usize)], order[&(pos.ceil() as usize)]);
            (q, lo + (hi - lo) * (pos - pos.floor()))
        })
        .collect()
}

/// The order statistics `ranks` (sorted, distinct; counted from `offset`, the rank of `values[0]`) of
/// `values` into `out`.
fn select_ranks(values: &mut [f64], ranks: &[usize], offset: usize, out: &mut BTreeMap<usize, f64>) {
    if ranks.is_empty() {
        return;
    }
    let mid = ranks.len() / 2;
    let k = ranks[mid] - offset;
    let (below, v, above) = values.select_nth_unstable_by(k, f64::total_cmp);
    out.insert(ranks[mid], *v);
    select_ranks(below, &ranks[..mid], offset, out);
    select_ranks(above, &ranks[mid + 1..], offset + k + 1, out);
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

/// Turns the raw cells into the design matrix: the numeric features standardized (in place when every
/// feature is numeric: no copy of the data), and each categorical feature as its level index per row (a
/// one-hot block stored as the position of its 1, so a column of many levels costs no more than one of
/// two).
pub fn design(ds: &mut Dataset, prep: &Preprocessing) -> Design {
    let numeric: Vec<(usize, &NumericFeature)> = ds
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == Kind::Numeric)
        .map(|(j, _)| j)
        .zip(&prep.numeric)
        .collect();
    let cols = ds.x.cols;
    let standardize = |x: f64, f: &NumericFeature| ((if x.is_nan() { f.fill } else { x }) - f.mean) / f.scale;
    if numeric.len() == cols {
        for row in ds.x.data.chunks_exact_mut(cols) {
            for (v, f) in row.iter_mut().zip(&prep.numeric) {
                *v = standardize(*v, f);
            }
        }
        return Design::from_dense(std::mem::replace(&mut ds.x, Matrix::zeros(0, cols)));
    }
    // Raw dictionary index -> level position, per categorical column.
    let categorical: Vec<(usize, Vec<u32>)> = ds
        .columns
        .iter()
        .enumerate()
        .filter_map(|(j, c)| match &c.kind {
            Kind::Categorical { values } => Some((j, values)),
            Kind::Numeric => None,
        })
        .zip(&prep.categorical)
        .map(|((j, values), feature)| {
            let level = |v: &String| feature.levels.binary_search(v).map_or(NO_LEVEL, |l| l as u32);
            (j, values.iter().map(level).collect::<Vec<_>>())
        })
        .collect();
    let rows = ds.x.rows;
    let mut dense = Matrix::zeros(rows, numeric.len());
    let mut codes = Vec::with_capacity(rows * categorical.len());
    for i in 0..rows {
        let raw = ds.x.row(i);
        for (o, (j, f)) in dense.row_mut(i).iter_mut().zip(&numeric) {
            *o = standardize(raw[*j], f);
        }
        codes.extend(categorical.iter().map(|(j, map)| {
            let v = raw[*j];
            if v.is_nan() { NO_LEVEL } else { map.get(v as usize).copied().unwrap_or(NO_LEVEL) }
        }));
    }
    let mut starts = Vec::with_capacity(prep.categorical.len());
    let mut width = numeric.len();
    for c in &prep.categorical {
        starts.push(width);
        width += c.levels.len();
    }
    ds.x = Matrix::zeros(0, cols);
    Design { dense, codes, starts, cols: width }
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
        let x = design(&mut ds, &prep).dense;
        assert_eq!(x.row(2)[1], 0.0, "a missing value becomes the mean, 0 after scaling");
        assert!((x.row(1)[0] + 2.0 / (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn string_features_are_one_hot_over_the_training_levels() {
        let mut ds = load("c,a,y\nzebra,1,0\nred,2,1\nblue,3,2\nred,4,3\n");
        let (prep, _) = fit(&ds, 1).unwrap();
        assert_eq!(prep.categorical[0].levels, ["blue", "red"]);
        let design = design(&mut ds, &prep);
        let x = design.view();
        assert_eq!((x.cols, x.starts), (3, &[1][..]));
        assert_eq!(x.codes, [NO_LEVEL, 1, 0, 1], "a level unseen in training has none");
        let mut row = [9.0; 3];
        x.write_row(0, &mut row);
        assert_eq!(&row[1..], &[0.0, 0.0], "... and encodes as zeros");
        x.write_row(1, &mut row);
        assert_eq!(&row[1..], &[0.0, 1.0]);
        x.write_row(2, &mut row);
        assert_eq!(&row[1..], &[1.0, 0.0]);
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

    /// On more rows than the sample, count, missing, mean, std, min and max stay exact (as without a
    /// sample); the inner quantiles and the histogram come from the evenly spaced sample rows.
    #[test]
    fn quantiles_and_histograms_come_from_an_evenly_spaced_sample() {
        let mut text = String::from("a,c,y\n");
        for i in 0..1001 {
            let a = if i % 7 == 3 { "NA".to_string() } else { ((i * 37) % 1000).to_string() };
            text.push_str(&format!("{a},{},{i}\n", ["p", "q", "r"][i % 3]));
        }
        let ds = load(&text);
        let (prep_all, all) = fit(&ds, 1).unwrap();
        let (prep, sampled) = fit_sampled(&ds, 1, 100).unwrap();
        assert_eq!(prep, prep_all, "the preprocessing does not depend on the sample");
        assert_eq!((all[0].sample_rows, sampled[0].sample_rows, sampled[1].sample_rows), (1000, 100, 1000));
        assert_eq!(sampled[1], all[1], "level frequencies count every row");
        let (s, a) = (&sampled[0], &all[0]);
        assert_eq!((s.count, s.missing), (a.count, a.missing));
        assert_eq!((s.count, s.missing), (857, 143));
        let (
            StatsKind::Numeric { mean, std, min, max, quantiles, histogram },
            StatsKind::Numeric { mean: m, std: sd, min: lo, max: hi, quantiles: q_all, .. },
        ) = (&s.kind, &a.kind)
        else {
            panic!()
        };
        assert_eq!((mean, std, min, max), (m, sd, lo, hi));
        assert_eq!((quantiles[0].1, quantiles[10].1), (*min, *max));
        // Rows 1 + 10k of the training rows: present unless (1 + 10k) % 7 == 3.
        let column: Vec<f64> =
            (0..100).map(|k| 1 + 10 * k).filter(|i| i % 7 != 3).map(|i| ((i * 37) % 1000) as f64).collect();
        assert_eq!(histogram.counts.iter().sum::<usize>(), column.len());
        let mut sorted = column.clone();
        sorted.sort_by(f64::total_cmp);
        let median = quantiles[5].1;
        assert!(sorted[sorted.len() / 2 - 1] <= median && median <= sorted[sorted.len() / 2]);
        assert!((median - q_all[5].1).abs() < 100.0, "{median} vs {}", q_all[5].1);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["sampleRows"], 100);
    }

    #[test]
    fn chunks_depend_on_the_row_count_alone() {
        let rows = 3 * CHUNK_ROWS + 5;
        let (_, sums) = over_chunks(
            rows,
            || 0usize,
            |s, e, calls| {
                *calls += 1;
                (s, e)
            },
        );
        let n_chunks = sums.len();
        assert_eq!(n_chunks, 4);
        for (c, &(s, e)) in sums.iter().enumerate() {
            assert_eq!((s, e), (c * rows / n_chunks, (c + 1) * rows / n_chunks));
        }
    }

    #[test]
    fn a_feature_missing_in_every_training_row_is_refused() {
        let ds = load("a,b,y\n1,5,0\n2,NA,1\n3,NA,2\n");
        let e = fit(&ds, 1).unwrap_err().to_string();
        assert!(e.contains("\"b\" have no values in the training rows"), "{e}");
    }
}
