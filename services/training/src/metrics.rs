//! Holdout metrics, computed as scikit-learn 1.9 computes them.
//!
//! Classification: `accuracy`, macro `precision` / `recall` / `f1` over the labels present in the true
//! or predicted classes (`zero_division=0`), `logLoss` (probabilities clipped to `[eps, 1 - eps]`,
//! `eps` = f64 machine epsilon, as `sklearn.metrics.log_loss` does since 1.5), and for two classes
//! `rocAuc` (ties get average ranks). Regression: `rmse`, `mae`, `r2`.

use mizzen_common::training::Metric;
use std::collections::BTreeMap;

/// Metrics of class probabilities `proba` (row-major `n x n_classes`) against the true classes. The
/// predicted class is the most probable one (the first on ties). Returns an empty map when the inputs do
/// not fit together (no rows, `proba` not `n x n_classes`, a label not below `n_classes`). `rocAuc` is
/// left out unless there are two classes and both occur in `y_true`.
pub fn classification(y_true: &[u32], proba: &[f64], n_classes: usize) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let n = y_true.len();
    if n == 0
        || n_classes == 0
        || n.checked_mul(n_classes) != Some(proba.len())
        || y_true.iter().any(|&c| c as usize >= n_classes)
    {
        return out;
    }
    let predicted: Vec<usize> = proba.chunks_exact(n_classes).map(argmax).collect();

    let mut tp = vec![0usize; n_classes];
    let mut true_count = vec![0usize; n_classes];
    let mut pred_count = vec![0usize; n_classes];
    for (&t, &p) in y_true.iter().zip(&predicted) {
        let t = t as usize;
        true_count[t] += 1;
        pred_count[p] += 1;
        if t == p {
            tp[t] += 1;
        }
    }
    let correct: usize = tp.iter().sum();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (mut precision, mut recall, mut f1, mut labels) = (0.0, 0.0, 0.0, 0usize);
    for c in 0..n_classes {
        if true_count[c] == 0 && pred_count[c] == 0 {
            continue; // scikit-learn averages over the labels that occur
        }
        labels += 1;
        precision += ratio(tp[c], pred_count[c]);
        recall += ratio(tp[c], true_count[c]);
        f1 += ratio(2 * tp[c], true_count[c] + pred_count[c]);
    }
    let labels = labels.max(1) as f64;
    let eps = f64::EPSILON;
    let log_loss = y_true
        .iter()
        .zip(proba.chunks_exact(n_classes))
        .map(|(&t, p)| -p[t as usize].clamp(eps, 1.0 - eps).ln())
        .sum::<f64>()
        / n as f64;

    out.insert(Metric::Accuracy.name().to_string(), correct as f64 / n as f64);
    out.insert(Metric::Precision.name().to_string(), precision / labels);
    out.insert(Metric::Recall.name().to_string(), recall / labels);
    out.insert(Metric::F1.name().to_string(), f1 / labels);
    out.insert(Metric::LogLoss.name().to_string(), log_loss);
    if n_classes == 2 {
        let positive: Vec<bool> = y_true.iter().map(|&c| c == 1).collect();
        let score: Vec<f64> = proba.chunks_exact(2).map(|p| p[1]).collect();
        if let Some(auc) = roc_auc(&positive, &score) {
            out.insert(Metric::RocAuc.name().to_string(), auc);
        }
    }
    out
}

/// Metrics of predictions against true values. Empty when the lengths differ or there are no rows; `r2`
/// is left out below two rows (scikit-learn: undefined).
pub fn regression(y_true: &[f64], y_pred: &[f64]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let n = y_true.len();
    if n == 0 || y_pred.len() != n {
        return out;
    }
    let (mut squares, mut absolute) = (0.0, 0.0);
    for (t, p) in y_true.iter().zip(y_pred) {
        let r = t - p;
        squares += r * r;
        absolute += r.abs();
    }
    out.insert(Metric::Rmse.name().to_string(), (squares / n as f64).sqrt());
    out.insert(Metric::Mae.name().to_string(), absolute / n as f64);
    if n >= 2 {
        out.insert(Metric::R2.name().to_string(), r2(y_true, y_pred));
    }
    out
}

/// The coefficient of determination, `1 - SS_res / SS_tot`; with constant truth, 1 for a perfect fit and
/// 0 otherwise (scikit-learn's `force_finite`).
pub fn r2(y_true: &[f64], y_pred: &[f64]) -> f64 {
    let n = y_true.len().min(y_pred.len());
    if n == 0 {
        return f64::NAN;
    }
    let mean = y_true[..n].iter().sum::<f64>() / n as f64;
    let (mut res, mut tot) = (0.0, 0.0);
    for (t, p) in y_true.iter().zip(y_pred) {
        res += (t - p) * (t - p);
        tot += (t - mean) * (t - mean);
    }
    if tot == 0.0 { if res == 0.0 { 1.0 } else { 0.0 } } else { 1.0 - res / tot }
}

/// Area under the ROC curve: the Mann-Whitney statistic with average ranks for tied scores. `None` when
/// one class is missing.
pub fn roc_auc(positive: &[bool], score: &[f64]) -> Option<f64> {
    let n = positive.len().min(score.len());
    let n_pos = positive[..n].iter().filter(|&&p| p).count();
    let n_neg = n - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && score[order[j]].total_cmp(&score[order[i]]).is_eq() {
            j += 1;
        }
        // Ranks i+1..=j share their average.
        let rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += rank * order[i..j].iter().filter(|&&k| positive[k]).count() as f64;
        i = j;
    }
    let (p, q) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * q))
}

/// Index of the first largest value; NaN never wins.
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] || (v[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn binary_metrics_match_scikit_learn() {
        // Expected values from scikit-learn 1.9.1 (hack/python-env.sh venv):
        //   y = [0,0,1,1,1,0,1,0,1,1]; p1 = [.1,.4,.35,.8,.5,.5,.9,.2,.65,.3]
        //   proba = column_stack([1-p1, p1]); pred = proba.argmax(1)
        //   accuracy_score, precision_score / recall_score / f1_score(average="macro", zero_division=0),
        //   log_loss(y, proba), roc_auc_score(y, p1)
        let y = [0, 0, 1, 1, 1, 0, 1, 0, 1, 1];
        let p1 = [0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.9, 0.2, 0.65, 0.3];
        let proba: Vec<f64> = p1.iter().flat_map(|p| [1.0 - p, *p]).collect();
        let m = classification(&y, &proba, 2);
        let expect = [
            ("accuracy", 0.7),
            ("precision", 0.7857142857142857),
            ("recall", 0.75),
            ("f1", 0.696969696969697),
            ("logLoss", 0.5238705963747021),
            ("rocAuc", 0.8125),
        ];
        assert_eq!(m.len(), expect.len(), "{m:?}");
        for (k, v) in expect {
            assert!(close(m[k], v), "{k}: {} vs {v}", m[k]);
        }
    }

    #[test]
    fn multiclass_metrics_match_scikit_learn() {
        // scikit-learn 1.9.1: y = [0,1,2,2,1,0,3,3]; proba rows below; pred = proba.argmax(1) (the first of
        // tied maxima) = [0,1,2,0,0,0,2,3]; log_loss clips the 0 probabilities to eps.
        let y = [0, 1, 2, 2, 1, 0, 3, 3];
        let proba = [
            0.7, 0.1, 0.1, 0.1, //
            0.2, 0.5, 0.2, 0.1, //
            0.1, 0.2, 0.6, 0.1, //
            0.3, 0.3, 0.2, 0.2, //
            0.4, 0.4, 0.1, 0.1, //
            0.25, 0.25, 0.25, 0.25, //
            0.1, 0.1, 0.5, 0.3, //
            0.0, 0.0, 0.0, 1.0,
        ];
        let m = classification(&y, &proba, 4);
        let expect = [
            ("accuracy", 0.625),
            ("precision", 0.75),
            ("recall", 0.625),
            ("f1", 0.625),
            ("logLoss", 0.8345804447523438),
        ];
        assert_eq!(m.len(), expect.len(), "{m:?}");
        for (k, v) in expect {
            assert!(close(m[k], v), "{k}: {} vs {v}", m[k]);
        }
    }

    #[test]
    fn labels_absent_from_truth_and_predictions_are_not_averaged() {
        // Class 2 never occurs: scikit-learn's macro average over [0, 1] only.
        let m = classification(&[0, 1], &[0.9, 0.1, 0.0, 0.2, 0.7, 0.1], 3);
        assert_eq!((m["precision"], m["recall"], m["f1"]), (1.0, 1.0, 1.0));
        assert!(!m.contains_key("rocAuc"));
    }

    #[test]
    fn roc_auc_averages_tied_ranks() {
        // scikit-learn: roc_auc_score([0,1,0,1,1,0], [.5,.5,.2,.9,.5,.5]) = 0.7777777777777778
        let auc = roc_auc(&[false, true, false, true, true, false], &[0.5, 0.5, 0.2, 0.9, 0.5, 0.5]).unwrap();
        assert!(close(auc, 0.7777777777777778), "{auc}");
        assert_eq!(roc_auc(&[true, true], &[0.1, 0.2]), None);
        let m = classification(&[1, 1], &[0.5, 0.5, 0.2, 0.8], 2);
        assert!(!m.contains_key("rocAuc"));
    }

    #[test]
    fn regression_metrics_match_scikit_learn() {
        // scikit-learn 1.9.1: y = [3, -0.5, 2, 7, 4.2], p = [2.5, 0.0, 2, 8, 3.9]:
        // root_mean_squared_error 0.5639148871948674, mean_absolute_error 0.46, r2_score 0.9480256276150627
        let m = regression(&[3.0, -0.5, 2.0, 7.0, 4.2], &[2.5, 0.0, 2.0, 8.0, 3.9]);
        assert!(close(m["rmse"], 0.5639148871948674), "{m:?}");
        assert!(close(m["mae"], 0.46), "{m:?}");
        assert!(close(m["r2"], 0.9480256276150627), "{m:?}");
        assert_eq!(r2(&[1.0, 1.0], &[1.0, 1.0]), 1.0);
        assert_eq!(r2(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn inconsistent_inputs_give_no_metrics() {
        assert!(classification(&[], &[], 2).is_empty());
        assert!(classification(&[0, 1], &[0.5, 0.5], 2).is_empty());
        assert!(classification(&[0, 2], &[0.5, 0.5, 0.5, 0.5], 2).is_empty());
        assert!(classification(&[0], &[1.0], 0).is_empty());
        assert!(regression(&[1.0], &[]).is_empty());
        assert!(!regression(&[1.0], &[2.0]).contains_key("r2"));
    }

    proptest! {
        #[test]
        fn classification_metrics_are_bounded(
            rows in proptest::collection::vec((0u32..3, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0), 1..60)
        ) {
            let y: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let proba: Vec<f64> = rows
                .iter()
                .flat_map(|r| {
                    let s = r.1 + r.2 + r.3 + 1e-9;
                    [r.1 / s, r.2 / s, r.3 / s]
                })
                .collect();
            let m = classification(&y, &proba, 3);
            for k in ["accuracy", "precision", "recall", "f1"] {
                prop_assert!((0.0..=1.0).contains(&m[k]), "{} = {}", k, m[k]);
            }
            prop_assert!(m["logLoss"] >= 0.0 && m["logLoss"].is_finite());
        }

        #[test]
        fn roc_auc_is_one_minus_auc_of_flipped_labels(
            rows in proptest::collection::vec((any::<bool>(), 0u8..5), 2..60)
        ) {
            let pos: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let neg: Vec<bool> = pos.iter().map(|p| !p).collect();
            let score: Vec<f64> = rows.iter().map(|r| f64::from(r.1)).collect();
            match (roc_auc(&pos, &score), roc_auc(&neg, &score)) {
                (Some(a), Some(b)) => {
                    prop_assert!((a + b - 1.0).abs() < 1e-12);
                    prop_assert!((0.0..=1.0).contains(&a));
                }
                (None, None) => {}
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
