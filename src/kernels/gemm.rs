//! Matrix product `C ← [C +] A·B` over strided slices.

use crate::Float;
use gemm::Parallelism;

/// A read-only strided matrix over a slice: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, F> {
    data: &'a [F],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, F: Float> MatRef<'a, F> {
    /// A row-major `rows × cols` matrix stored contiguously in `data`.
    ///
    /// # Panics
    /// If `data` is shorter than `rows · cols`.
    pub fn row_major(data: &'a [F], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "MatRef: {rows}×{cols} matrix needs {} elements, slice has {}",
            rows * cols,
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `cols` of this matrix (no copy).
    ///
    /// # Panics
    /// If the range reaches past the last column.
    pub fn columns(self, cols: std::ops::Range<usize>) -> Self {
        assert!(
            cols.start <= cols.end && cols.end <= self.cols,
            "MatRef: columns {cols:?} of a matrix with {} columns",
            self.cols
        );
        let data = if cols.is_empty() || self.rows == 0 {
            &self.data[..0]
        } else {
            // In bounds: element (0, start) exists.
            &self.data[cols.start * self.cs..]
        };
        Self {
            data,
            cols: cols.len(),
            ..self
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `c ← a·b` (or `c ← c + a·b` when `accumulate`), with `c` row-major `a.rows × b.cols`.
///
/// Single-threaded on purpose: callers parallelise over images, which keeps results
/// independent of the thread count.
///
/// # Panics
/// If the inner dimensions differ or `c` has the wrong length.
pub fn matmul<F: Float>(a: MatRef<'_, F>, b: MatRef<'_, F>, c: &mut [F], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(
        k, b.rows,
        "matmul: inner dimensions differ ({m}×{k} · {}×{n})",
        b.rows
    );
    assert_eq!(c.len(), m * n, "matmul: output must have {m}×{n} elements");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(F::zero());
        }
        return;
    }
    // SAFETY: the views were bounds-checked at construction (row-major, in-bounds for
    // rows × cols, and transposes keep the same footprint); `c` holds exactly m × n
    // elements written with row stride n and column stride 1; `c` is a unique borrow
    // and cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            F::one(),
            F::one(),
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_has_known_values() {
        // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154]
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut c = [0.0f32; 4];
        matmul(
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            &mut c,
            false,
        );
        assert_eq!(c, [58.0, 64.0, 139.0, 154.0]);
        matmul(
            MatRef::row_major(&a, 2, 3),
            MatRef::row_major(&b, 3, 2),
            &mut c,
            true,
        );
        assert_eq!(c, [116.0, 128.0, 278.0, 308.0]);
    }

    #[test]
    fn transposed_operands_match_ndarray() {
        let a = ndarray::Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f64 * 0.25 - 3.0);
        let b = ndarray::Array2::from_shape_fn((4, 7), |(i, j)| (i as f64 - j as f64) * 0.5);
        let expected = a.dot(&b.t());
        let mut c = vec![0.0f64; 20];
        let (a_s, b_s) = (a.as_slice().unwrap(), b.as_slice().unwrap());
        matmul(
            MatRef::row_major(a_s, 5, 7),
            MatRef::row_major(b_s, 4, 7).t(),
            &mut c,
            false,
        );
        assert_eq!(c, expected.into_raw_vec_and_offset().0);
    }

    #[test]
    fn column_slices_of_a_matrix_and_its_transpose() {
        // a = [1 2 3; 4 5 6]; columns 1..3 = [2 3; 5 6]; aᵀ columns 1..2 = [4; 5; 6].
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut c = [0.0; 4];
        let eye = [1.0, 0.0, 0.0, 1.0];
        let a_mat = MatRef::row_major(&a, 2, 3);
        matmul(
            a_mat.columns(1..3),
            MatRef::row_major(&eye, 2, 2),
            &mut c,
            false,
        );
        assert_eq!(c, [2.0, 3.0, 5.0, 6.0]);
        let mut d = [0.0; 3];
        matmul(
            a_mat.t().columns(1..2),
            MatRef::row_major(&[1.0], 1, 1),
            &mut d,
            false,
        );
        assert_eq!(d, [4.0, 5.0, 6.0]);
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = [5.0f32; 6];
        matmul(
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 3),
            &mut c,
            false,
        );
        assert_eq!(c, [0.0; 6]);
    }
}
