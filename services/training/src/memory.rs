//! How much memory a fit needs, checked before the design matrix and the learner's state are allocated:
//! a run that cannot fit in the memory it may use is refused with both numbers, where the kernel would
//! otherwise kill it with no report at all.

use crate::learn::{Algorithm, Params, defaults};
use crate::prep::Preprocessing;

/// The environment variable that sets the memory the trainer may use, in bytes (or with a `K`, `M`, `G`,
/// `Ki`, `Mi` or `Gi` suffix).
pub const LIMIT_ENV: &str = "MIZZEN_TRAIN_MEMORY_LIMIT";

/// The memory a run may use, and where that number comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub bytes: u64,
    pub source: &'static str,
}

/// The memory the trainer may use: [`LIMIT_ENV`] when set, else the container's memory limit (cgroup v2
/// `memory.max`, or v1 `memory.limit_in_bytes`), else the machine's memory (`MemTotal`); `None` when none
/// of them can be read. An unreadable [`LIMIT_ENV`] is an error naming it.
pub fn limit() -> Result<Option<Limit>, String> {
    if let Ok(value) = std::env::var(LIMIT_ENV) {
        let bytes = parse_bytes(&value)
            .ok_or_else(|| format!("{LIMIT_ENV}={value:?}: use a number of bytes, such as 2Gi or 1500M"))?;
        return Ok(Some(Limit { bytes, source: LIMIT_ENV }));
    }
    let read = |path: &str| std::fs::read_to_string(path).ok();
    // "max" (or v1's huge sentinel) means no limit.
    for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
        if let Some(bytes) = read(path).and_then(|v| v.trim().parse::<u64>().ok()).filter(|&b| b < 1 << 60) {
            return Ok(Some(Limit { bytes, source: "the container's memory limit" }));
        }
    }
    Ok(proc_kib("/proc/meminfo", "MemTotal:")
        .map(|kib| Limit { bytes: kib * 1024, source: "the machine's memory" }))
}

/// `1500000`, `1500M`, `2G`, `2Gi`, `512Ki`: bytes.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

/// The process's resident memory now (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    proc_kib("/proc/self/status", "VmRSS:").map(|kib| kib * 1024)
}

/// The most resident memory the process has had (`VmHWM`), in bytes.
pub fn peak_bytes() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:").map(|kib| kib * 1024)
}

fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// What a fit will allocate, in bytes, beyond the table already read: the design matrix (when it is not
/// the table itself) and the learner's state, for `rows` rows preprocessed by `prep` into `outputs`
/// classes (1 for a regression). An estimate, from the sizes of the learners' arrays.
pub fn estimate(
    rows: usize,
    prep: &Preprocessing,
    algorithm: Algorithm,
    params: &Params,
    outputs: usize,
) -> u64 {
    const F64: f64 = 8.0;
    let rows = rows as f64;
    let dense = prep.numeric.len() as f64;
    let blocks = prep.categorical.len() as f64;
    let width = prep.width() as f64;
    // A numeric table is standardized in place; one with categorical features gets its own design matrix.
    let row_bytes = dense * F64 + blocks * 4.0;
    let design = if blocks > 0.0 { rows * row_bytes } else { 0.0 };
    // Per-chunk gradient sums of the row passes are capped at 64 MiB in all.
    let partials = |values: f64| (values * F64 * 64.0).min(64.0 * (1 << 20) as f64);
    let learner = match algorithm {
        Algorithm::LogisticRegression => {
            let k = if outputs <= 2 { 1.0 } else { outputs as f64 };
            let parameters = k * width + k;
            // L-BFGS keeps `memory` pairs of vectors and a few more of them.
            (2.0 * 10.0 + 8.0) * parameters * F64 + partials(parameters)
        }
        Algorithm::LinearRegression if width <= 4096.0 => 3.0 * width * width * F64 + partials(width * width),
        Algorithm::LinearRegression => 10.0 * width * F64 + partials(width),
        Algorithm::Mlp => {
            let hidden = params.hidden_layers.clone().unwrap_or_else(|| defaults::MLP_HIDDEN_LAYERS.to_vec());
            let mut sizes = vec![width];
            sizes.extend(hidden.iter().map(|&h| h as f64));
            sizes.push(if outputs <= 2 { 1.0 } else { outputs as f64 });
            let parameters: f64 = sizes.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
            let units: f64 = sizes[1..].iter().sum();
            let batch = params.batch_size.unwrap_or(defaults::MLP_BATCH_SIZE).max(512) as f64;
            // Weights, Adam's two moments, the gradient, the best weights, a transpose and the chunks'
            // gradient sums; activations and deltas of a minibatch; the validation rows' copy.
            7.0 * parameters * F64 + 2.0 * batch * units * F64 + 0.1 * rows * row_bytes
        }
    };
    (design + learner) as u64
}

/// `bytes` for a person: `1.4 GiB`, `310 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", (b / (1u64 << 20) as f64).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prep::{CategoricalFeature, NumericFeature};

    #[test]
    fn byte_counts_read_as_kubernetes_writes_them() {
        assert_eq!(parse_bytes("1500"), Some(1500));
        assert_eq!(parse_bytes("2Gi"), Some(2 << 30));
        assert_eq!(parse_bytes(" 512Mi "), Some(512 << 20));
        assert_eq!(parse_bytes("3G"), Some(3_000_000_000));
        assert_eq!(parse_bytes("2GB"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999999999999Gi"), None);
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(300 << 20), "300 MiB");
    }

    /// The learner's state grows with the one-hot width: an MLP's first layer holds levels x units
    /// weights, a logistic regression levels x classes; the design matrix does not grow with the levels.
    #[test]
    fn estimates_follow_the_width_not_the_rows_times_levels() {
        let prep = |levels: usize| Preprocessing {
            numeric: vec![NumericFeature { name: "a".into(), fill: 0.0, mean: 0.0, scale: 1.0 }],
            categorical: vec![CategoricalFeature {
                name: "c".into(),
                levels: (0..levels).map(|l| l.to_string()).collect(),
            }],
        };
        let p = Params::default();
        let mlp = estimate(200_000, &prep(50_000), Algorithm::Mlp, &p, 2);
        assert!((200 << 20..600 << 20).contains(&mlp), "{}", human(mlp));
        let wide = estimate(200_000, &prep(5_000_000), Algorithm::Mlp, &p, 2);
        assert!(wide > 20 << 30, "{}", human(wide));
        let logistic = estimate(200_000, &prep(50_000), Algorithm::LogisticRegression, &p, 2);
        assert!(logistic < 100 << 20, "{}", human(logistic));
        let design_only = estimate(200_000, &prep(2), Algorithm::LinearRegression, &p, 1);
        assert_eq!(design_only, 200_000 * 12 + 3 * 9 * 8 + 9 * 8 * 64);
    }
}
