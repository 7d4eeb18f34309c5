//! `dst = lhs · rhs` in f32 by the `gemm` crate's kernel on the calling thread, each operand
//! given by its first element and its strides: the product of the CPU's own tasks on rayon's
//! threads (panels of widened weights, blocks of a prompt's attention), which must not start a
//! parallel product of their own.
#![allow(unsafe_code)]

/// A matrix operand: its first element and its row and column strides, in elements.
#[derive(Debug, Clone, Copy)]
pub struct Operand<P> {
    /// The element at row 0, column 0.
    pub ptr: P,
    /// Elements from one row to the next.
    pub row_stride: usize,
    /// Elements from one column to the next.
    pub col_stride: usize,
}

impl<P> Operand<P> {
    /// Rows `row_stride` apart, each contiguous.
    pub fn rows(ptr: P, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }

    /// Columns `col_stride` apart, each contiguous (a row-major matrix read transposed).
    pub fn columns(ptr: P, col_stride: usize) -> Self {
        Self {
            ptr,
            row_stride: 1,
            col_stride,
        }
    }
}

/// `dst [m, n] = lhs [m, k] · rhs [k, n]`, `dst` overwritten (not read).
///
/// # Safety
/// Every element the strides address for these sizes lies within its operand's allocation;
/// `dst`'s elements are written by no one else meanwhile and overlap neither input.
pub unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Operand<*mut f32>,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
) {
    // SAFETY: the caller's contract, as gemm states it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride as isize,
            dst.row_stride as isize,
            false,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
