//! The matrix product of the MLP's forward and backward passes, blocked for registers and rounded exactly
//! as the plain loop.

/// Rows per register block of [`gemm`].
const MR: usize = 4;
/// Columns per register block of [`gemm`].
const NR: usize = 4;
/// Rows per block of [`gemm`] when the output has fewer than `NR` columns.
const NARROW_ROWS: usize = 8;

/// `c = start + A B` with `A` an `m x depth` matrix read through strides, `A[i][s] = a[i * ai + s * as_]`
/// (`a_strides = (ai, as_)`), `B` row-major `depth x n`, `c` row-major `m x n`, and `start` the bias of
/// each column (or zero). Each sum runs over `s = 0, 1, ...` in order, exactly as the plain loop would
/// round it. Blocks of `MR x NR` sums stay in registers meanwhile, and `MR` rows of `A` at a time are
/// packed `s`-major into `panel`, each value twice (so that a pair of sums takes it with one load).
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    m: usize,
    n: usize,
    depth: usize,
    a: &[f64],
    a_strides: (usize, usize),
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
    panel: &mut Vec<f64>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (ai, as_) = a_strides;
    let a = if depth == 0 { &a[..0] } else { &a[..(m - 1) * ai + (depth - 1) * as_ + 1] };
    let b = &b[..depth * n];
    let c = &mut c[..m * n];
    let bias = bias.map(|v| &v[..n]);
    match n {
        1 => return gemm_narrow::<1>(a, a_strides, b, bias, c),
        2 => return gemm_narrow::<2>(a, a_strides, b, bias, c),
        3 => return gemm_narrow::<3>(a, a_strides, b, bias, c),
        _ => {}
    }
    let panel = at_least(panel, 2 * MR * depth);
    for (i0, c_rows) in (0..m).step_by(MR).zip(c.chunks_mut(MR * n)) {
        let rows = c_rows.len() / n;
        let p = &mut panel[..2 * rows * depth];
        if as_ == 1 {
            for r in 0..rows {
                let a_row = &a[(i0 + r) * ai..][..depth];
                for (ps, &v) in p.chunks_exact_mut(2 * rows).zip(a_row) {
                    ps[2 * r] = v;
                    ps[2 * r + 1] = v;
                }
            }
        } else {
            for (s, ps) in p.chunks_exact_mut(2 * rows).enumerate() {
                for (r, pair) in ps.chunks_exact_mut(2).enumerate() {
                    pair.fill(a[(i0 + r) * ai + s * as_]);
                }
            }
        }
        match rows {
            4 => gemm_rows::<4, 8>(n, p, b, bias, c_rows),
            3 => gemm_rows::<3, 6>(n, p, b, bias, c_rows),
            2 => gemm_rows::<2, 4>(n, p, b, bias, c_rows),
            _ => gemm_rows::<1, 2>(n, p, b, bias, c_rows),
        }
    }
}

/// One panel of `R` rows (`R2 = 2 R` values per `s`) times all columns of `b`.
fn gemm_rows<const R: usize, const R2: usize>(
    n: usize,
    p: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let mut j = 0;
    while j + NR <= n {
        gemm_block::<R, R2, NR>(j, n, p, b, bias, c);
        j += NR;
    }
    match n - j {
        3 => gemm_block::<R, R2, 3>(j, n, p, b, bias, c),
        2 => gemm_block::<R, R2, 2>(j, n, p, b, bias, c),
        1 => gemm_block::<R, R2, 1>(j, n, p, b, bias, c),
        _ => {}
    }
}

#[inline(always)]
fn gemm_block<const R: usize, const R2: usize, const C: usize>(
    j: usize,
    n: usize,
    p: &[f64],
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let start: [f64; C] = match bias {
        Some(bias) => *bias[j..].first_chunk().expect("C bias values"),
        None => [0.0; C],
    };
    let mut acc = [start; R];
    for (ps, b_row) in p.as_chunks::<R2>().0.iter().zip(b.chunks_exact(n)) {
        let bs: &[f64; C] = b_row[j..].first_chunk().expect("C values");
        for (acc_row, x) in acc.iter_mut().zip(ps.as_chunks::<2>().0) {
            for (q, (sum, &w)) in acc_row.iter_mut().zip(bs).enumerate() {
                *sum += x[q % 2] * w;
            }
        }
    }
    for (c_row, acc_row) in c.chunks_exact_mut(n).zip(&acc) {
        c_row[j..j + C].copy_from_slice(acc_row);
    }
}

/// [`gemm`] for `C < NR` output columns: `NARROW_ROWS` rows at a time, read in place.
fn gemm_narrow<const C: usize>(
    a: &[f64],
    (ai, as_): (usize, usize),
    b: &[f64],
    bias: Option<&[f64]>,
    c: &mut [f64],
) {
    let start: [f64; C] = match bias {
        Some(bias) => *bias.first_chunk().expect("C bias values"),
        None => [0.0; C],
    };
    let (blocks, rest) = c.as_chunks_mut::<C>();
    for (i0, c_rows) in (0..blocks.len()).step_by(NARROW_ROWS).zip(blocks.chunks_mut(NARROW_ROWS)) {
        if c_rows.len() == NARROW_ROWS {
            let mut acc = [start; NARROW_ROWS];
            for (s, bs) in b.as_chunks::<C>().0.iter().enumerate() {
                for (r, acc_row) in acc.iter_mut().enumerate() {
                    let x = a[(i0 + r) * ai + s * as_];
                    for (sum, &w) in acc_row.iter_mut().zip(bs) {
                        *sum += x * w;
                    }
                }
            }
            c_rows.copy_from_slice(&acc);
        } else {
            for (r, c_row) in c_rows.iter_mut().enumerate() {
                let mut acc = start;
                for (s, bs) in b.as_chunks::<C>().0.iter().enumerate() {
                    let x = a[(i0 + r) * ai + s * as_];
                    for (sum, &w) in acc.iter_mut().zip(bs) {
                        *sum += x * w;
                    }
                }
                *c_row = acc;
            }
        }
    }
    debug_assert!(rest.is_empty());
}

/// `v[..n]`, growing `v` when it is shorter.
pub(super) fn at_least(v: &mut Vec<f64>, n: usize) -> &mut [f64] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The blocked product rounds every entry exactly as the plain loop does, for every shape of block
    /// and tail, with `A` read row-major or transposed.
    #[test]
    fn gemm_matches_the_plain_loop_bit_for_bit() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut panel = Vec::new();
        for (m, n, depth) in
            [(1, 1, 1), (7, 1, 13), (9, 2, 5), (4, 3, 8), (13, 4, 3), (6, 11, 17), (5, 100, 20)]
        {
            let a: Vec<f64> = (0..m * depth).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f64> = (0..depth * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let bias: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            for (strides, with_bias) in [((depth, 1), true), ((1, m), false)] {
                let (ai, as_) = strides;
                let mut expect = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut sum = if with_bias { bias[j] } else { 0.0 };
                        for s in 0..depth {
                            sum += a[i * ai + s * as_] * b[s * n + j];
                        }
                        expect[i * n + j] = sum;
                    }
                }
                let mut c = vec![f64::NAN; m * n];
                gemm(m, n, depth, &a, strides, &b, with_bias.then_some(&bias[..]), &mut c, &mut panel);
                assert_eq!(c, expect, "{m} x {n} x {depth}, strides {strides:?}");
            }
        }
    }
}
