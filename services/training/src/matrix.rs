//! A dense row-major matrix of f64: the design matrix the learners read.

/// Row-major `rows x cols` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self { rows, cols, data: vec![0.0; rows * cols] }
    }

    /// Wraps `data`, which must hold `rows * cols` values in row-major order.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f64>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data length");
        Self { rows, cols, data }
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows `start..end` as a borrowed view.
    pub fn rows_slice(&self, start: usize, end: usize) -> MatrixView<'_> {
        MatrixView {
            rows: end - start,
            cols: self.cols,
            data: &self.data[start * self.cols..end * self.cols],
        }
    }

    pub fn view(&self) -> MatrixView<'_> {
        MatrixView { rows: self.rows, cols: self.cols, data: &self.data }
    }
}

/// A borrowed row-major matrix (for example the training rows of a shuffled table).
#[derive(Clone, Copy, Debug)]
pub struct MatrixView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [f64],
}

impl<'a> MatrixView<'a> {
    pub fn row(&self, i: usize) -> &'a [f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn rows_slice(&self, start: usize, end: usize) -> MatrixView<'a> {
        MatrixView {
            rows: end - start,
            cols: self.cols,
            data: &self.data[start * self.cols..end * self.cols],
        }
    }
}

/// The level a row has in a one-hot block when it has none: a missing value, or one not seen in training
/// (its block is all zeros).
pub const NO_LEVEL: u32 = u32::MAX;

/// The design matrix `[dense | one-hot block | one-hot block | ...]`, stored as its dense columns and,
/// per one-hot block, the level each row has: `rows x (dense + blocks)` values whatever the number of
/// levels, where the same matrix stored densely would hold `rows x (dense + levels)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Design {
    /// The dense columns (the standardized numeric features).
    pub dense: Matrix,
    /// `rows x starts.len()`, row-major: each row's level in each block, or [`NO_LEVEL`].
    pub codes: Vec<u32>,
    /// The design column each one-hot block starts at (the first is `dense.cols`).
    pub starts: Vec<usize>,
    /// The design matrix's width: `dense.cols` plus every block's levels.
    pub cols: usize,
}

impl Design {
    /// A design matrix of dense columns only.
    pub fn from_dense(dense: Matrix) -> Self {
        let cols = dense.cols;
        Self { dense, codes: Vec::new(), starts: Vec::new(), cols }
    }

    pub fn rows(&self) -> usize {
        self.dense.rows
    }

    pub fn view(&self) -> DesignView<'_> {
        DesignView {
            rows: self.dense.rows,
            dense: self.dense.view(),
            codes: &self.codes,
            starts: &self.starts,
            cols: self.cols,
        }
    }

    pub fn rows_slice(&self, start: usize, end: usize) -> DesignView<'_> {
        self.view().rows_slice(start, end)
    }
}

/// A borrowed [`Design`] (for example the training rows of a shuffled table).
#[derive(Clone, Copy, Debug)]
pub struct DesignView<'a> {
    pub rows: usize,
    pub dense: MatrixView<'a>,
    pub codes: &'a [u32],
    pub starts: &'a [usize],
    pub cols: usize,
}

impl<'a> From<MatrixView<'a>> for DesignView<'a> {
    fn from(dense: MatrixView<'a>) -> Self {
        Self { rows: dense.rows, dense, codes: &[], starts: &[], cols: dense.cols }
    }
}

impl<'a> DesignView<'a> {
    /// The number of one-hot blocks.
    pub fn blocks(&self) -> usize {
        self.starts.len()
    }

    /// Row `i`'s level in each one-hot block.
    pub fn codes_row(&self, i: usize) -> &'a [u32] {
        let c = self.starts.len();
        &self.codes[i * c..(i + 1) * c]
    }

    /// The design columns that are 1 in row `i`'s one-hot blocks.
    pub fn ones(&self, i: usize) -> impl Iterator<Item = usize> + 'a {
        self.codes_row(i)
            .iter()
            .zip(self.starts)
            .filter(|(c, _)| **c != NO_LEVEL)
            .map(|(&c, &s)| s + c as usize)
    }

    /// Row `i` of the design matrix times `w` (length `cols`).
    pub fn dot(&self, i: usize, w: &[f64]) -> f64 {
        let d = self.dense.cols;
        let mut s = crate::vector::dot(self.dense.row(i), &w[..d]);
        for j in self.ones(i) {
            s += w[j];
        }
        s
    }

    /// `out += a * row i` (length `cols`).
    pub fn axpy(&self, i: usize, a: f64, out: &mut [f64]) {
        let d = self.dense.cols;
        crate::vector::axpy(a, self.dense.row(i), &mut out[..d]);
        for j in self.ones(i) {
            out[j] += a;
        }
    }

    /// Row `i` written out in full into `out` (length `cols`).
    pub fn write_row(&self, i: usize, out: &mut [f64]) {
        let d = self.dense.cols;
        out[..d].copy_from_slice(self.dense.row(i));
        out[d..].fill(0.0);
        for j in self.ones(i) {
            out[j] = 1.0;
        }
    }

    pub fn rows_slice(&self, start: usize, end: usize) -> DesignView<'a> {
        let c = self.starts.len();
        DesignView {
            rows: end - start,
            dense: self.dense.rows_slice(start, end),
            codes: &self.codes[start * c..end * c],
            starts: self.starts,
            cols: self.cols,
        }
    }

    /// The rows `rows`, in that order, copied.
    pub fn gather(&self, rows: &[usize]) -> Design {
        let mut out = Design {
            dense: Matrix { rows: 0, cols: self.dense.cols, data: Vec::new() },
            codes: Vec::new(),
            starts: self.starts.to_vec(),
            cols: self.cols,
        };
        self.gather_into(rows, &mut out.dense.data, &mut out.codes);
        out.dense.rows = rows.len();
        out
    }

    /// The rows `rows`, in that order, into `dense` and `codes` (cleared first): the buffers of a
    /// [`DesignView`] of those rows.
    pub fn gather_into(&self, rows: &[usize], dense: &mut Vec<f64>, codes: &mut Vec<u32>) {
        dense.clear();
        codes.clear();
        for &r in rows {
            dense.extend_from_slice(self.dense.row(r));
            codes.extend_from_slice(self.codes_row(r));
        }
    }

    /// A view of rows gathered by [`gather_into`](Self::gather_into) into `dense` and `codes`.
    pub fn with_rows(&self, rows: usize, dense: &'a [f64], codes: &'a [u32]) -> DesignView<'a> {
        DesignView {
            rows,
            dense: MatrixView { rows, cols: self.dense.cols, data: &dense[..rows * self.dense.cols] },
            codes: &codes[..rows * self.starts.len()],
            starts: self.starts,
            cols: self.cols,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two dense columns, then blocks of 3 and 2 levels: every operation agrees with the matrix written
    /// out in full.
    #[test]
    fn a_design_acts_as_its_dense_matrix() {
        let design = Design {
            dense: Matrix::from_vec(3, 2, vec![1.0, 2.0, -1.0, 0.5, 0.0, 3.0]),
            codes: vec![2, 0, NO_LEVEL, 1, 0, NO_LEVEL],
            starts: vec![2, 5],
            cols: 7,
        };
        let full = [
            [1.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.0],
            [-1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0],
            [0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let x = design.view();
        let w = [0.5, -1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut row = [9.0; 7];
        for (i, expected) in full.iter().enumerate() {
            x.write_row(i, &mut row);
            assert_eq!(&row, expected);
            assert_eq!(x.dot(i, &w), crate::vector::dot(expected, &w));
            let mut acc = [1.0; 7];
            x.axpy(i, 2.0, &mut acc);
            let want: Vec<f64> = expected.iter().map(|v| 1.0 + 2.0 * v).collect();
            assert_eq!(acc.to_vec(), want);
        }
        let picked = x.gather(&[2, 0]);
        let tail = x.rows_slice(1, 3);
        for (i, src) in [2, 0].into_iter().enumerate() {
            picked.view().write_row(i, &mut row);
            assert_eq!(row, full[src], "gathered row {i}");
        }
        tail.write_row(1, &mut row);
        assert_eq!(row, full[2]);
    }
}
