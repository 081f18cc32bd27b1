//! The seeded holdout split, done in place: rows are shuffled (the permutation of a Fisher-Yates shuffle
//! with a seeded generator, applied by following its cycles) and the first `ceil(n * fraction)` become
//! the holdout set, so no copy of the data is made.

use crate::data::{DataError, Dataset, Labels};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

/// Shuffles the rows of `ds` and returns the number of holdout rows (the first ones) and, for each row
/// now at position `i`, the 0-based data row it came from.
pub fn shuffle_split(ds: &mut Dataset, fraction: f64, seed: u64) -> Result<(usize, Vec<u32>), DataError> {
    let n = ds.x.rows;
    check_fraction(fraction)?;
    let holdout = ((n as f64) * fraction).ceil() as usize;
    if holdout == 0 || holdout >= n {
        return Err(DataError::Invalid(format!(
            "{n} row(s) are too few to hold out {fraction} of them and still train: need at least 2"
        )));
    }
    let mut origin: Vec<u32> = (0..n as u32).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    for i in (1..n).rev() {
        origin.swap(i, rng.random_range(0..=i));
    }
    permute(ds, &origin);
    Ok((holdout, origin))
}

/// A holdout fraction must be in (0, 1): a configuration mistake otherwise.
pub fn check_fraction(fraction: f64) -> Result<(), DataError> {
    if fraction > 0.0 && fraction < 1.0 {
        Ok(())
    } else {
        Err(DataError::Config(format!("holdout fraction {fraction} must be in (0, 1)")))
    }
}

/// Moves row `origin[p]` of `ds` (cells and label) to position `p`, following the permutation's cycles:
/// each row is read once and written once, where the same permutation as a sequence of swaps would
/// touch two random rows per swap.
fn permute(ds: &mut Dataset, origin: &[u32]) {
    let cols = ds.x.cols;
    let data = &mut ds.x.data;
    let mut done = vec![false; origin.len()];
    let mut saved = vec![0.0; cols];
    for start in 0..origin.len() {
        if done[start] || origin[start] as usize == start {
            continue;
        }
        saved.copy_from_slice(&data[start * cols..(start + 1) * cols]);
        let mut q = start;
        loop {
            done[q] = true;
            let from = origin[q] as usize;
            if from == start {
                data[q * cols..(q + 1) * cols].copy_from_slice(&saved);
                break;
            }
            data.copy_within(from * cols..(from + 1) * cols, q * cols);
            q = from;
        }
    }
    // The labels are small: gathered into a new vector.
    match &mut ds.labels {
        Labels::Classes { y, .. } => *y = origin.iter().map(|&o| y[o as usize]).collect(),
        Labels::Values(v) => *v = origin.iter().map(|&o| v[o as usize]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Task, read_csv};

    fn dataset(n: usize) -> Dataset {
        let mut text = String::from("x,y\n");
        for i in 0..n {
            text.push_str(&format!("{i},{}\n", i * 10));
        }
        let spec = crate::data::Spec {
            label: "y".into(),
            features: None,
            categorical: vec![],
            task: Task::Regression,
        };
        read_csv(text.as_bytes(), &spec).unwrap()
    }

    #[test]
    fn the_split_is_seeded_keeps_rows_whole_and_sizes_like_scikit_learn() {
        let mut a = dataset(101);
        let (holdout, origin) = shuffle_split(&mut a, 0.2, 7).unwrap();
        assert_eq!(holdout, 21);
        let Labels::Values(y) = &a.labels else { panic!() };
        for i in 0..101 {
            assert_eq!(a.x.row(i)[0], origin[i] as f64);
            assert_eq!(y[i], origin[i] as f64 * 10.0);
        }
        let mut sorted = origin.clone();
        sorted.sort();
        assert_eq!(sorted, (0..101).collect::<Vec<_>>());
        let mut b = dataset(101);
        assert_eq!(shuffle_split(&mut b, 0.2, 7).unwrap().1, origin);
        let mut c = dataset(101);
        assert_ne!(shuffle_split(&mut c, 0.2, 8).unwrap().1, origin);
    }

    #[test]
    fn too_few_rows_are_refused() {
        let mut one = dataset(1);
        assert!(shuffle_split(&mut one, 0.2, 1).unwrap_err().to_string().contains("too few"));
    }
}
