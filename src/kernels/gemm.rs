//! The accumulating matrix–matrix product `C += A·B` of row-major f32 panels with strides:
//! the shape of a backward pass's `dx += dy·W`, where W is streamed row by row as it is
//! stored instead of being transposed. A portable reference, and register tiles of
//! [`MR`]×[`NR`] (AVX2+FMA on x86-64, NEON on AArch64) picked at run time; `k` is cut into
//! blocks of [`KC`] so that a block of A and a panel of B stay in cache.

use super::dot::{isa, Isa};

/// Rows of A (and C) per register tile.
pub(crate) const MR: usize = 6;
/// Columns of B (and C) per register tile (of the SIMD paths).
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
pub(crate) const NR: usize = 16;
/// Depth of one pass over a block of A.
pub(crate) const KC: usize = 256;

/// Shapes and row strides of [`gemm_acc`]: A `[m, k]` (row stride `lda`), B `[k, n]`
/// (`ldb`), C `[m, n]` (`ldc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmDims {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Row stride of A (≥ k).
    pub lda: usize,
    /// Row stride of B (≥ n).
    pub ldb: usize,
    /// Row stride of C (≥ n).
    pub ldc: usize,
}

impl GemmDims {
    /// Panics unless the slices hold what the shapes and strides address.
    fn check(&self, a: &[f32], b: &[f32], c: &[f32]) {
        let need = |rows: usize, stride: usize, len: usize| if rows == 0 { 0 } else { (rows - 1) * stride + len };
        assert!(self.lda >= self.k && self.ldb >= self.n && self.ldc >= self.n, "gemm_acc: a stride below its row");
        assert!(
            a.len() >= need(self.m, self.lda, self.k)
                && b.len() >= need(self.k, self.ldb, self.n)
                && c.len() >= need(self.m, self.ldc, self.n),
            "gemm_acc: an operand shorter than its shape {self:?}"
        );
    }
}

/// `C += A·B` (see [`GemmDims`]).
pub fn gemm_acc(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
    d.check(a, b, c);
    if d.m == 0 || d.n == 0 || d.k == 0 {
        return;
    }
    let simd = isa() != Isa::Scalar;
    for p0 in (0..d.k).step_by(KC) {
        let kb = KC.min(d.k - p0);
        let sub = GemmDims { k: kb, ..d };
        let (a, b) = (&a[p0..], &b[p0 * d.ldb..]);
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 and FMA were detected at run time (every non-scalar x86 Isa has
            // them); `check` bounds every address the kernel forms.
            unsafe { x86::gemm_acc(sub, a, b, c) };
            continue;
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        if simd {
            // SAFETY: NEON is baseline on AArch64; `check` bounds every address.
            unsafe { neon::gemm_acc(sub, a, b, c) };
            continue;
        }
        let _ = simd;
        gemm_acc_scalar(sub, a, b, c);
    }
}

/// Portable reference of [`gemm_acc`].
pub fn gemm_acc_scalar(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
    d.check(a, b, c);
    for i in 0..d.m {
        let crow = &mut c[i * d.ldc..i * d.ldc + d.n];
        for p in 0..d.k {
            let av = a[i * d.lda + p];
            let brow = &b[p * d.ldb..p * d.ldb + d.n];
            crow.iter_mut().zip(brow).for_each(|(c, &b)| *c += av * b);
        }
    }
}

/// The columns `j0..` of C that the tiles leave (n not a multiple of [`NR`]), portably.
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
fn tail_columns(d: GemmDims, j0: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..d.m {
        for p in 0..d.k {
            let av = a[i * d.lda + p];
            for j in j0..d.n {
                c[i * d.ldc + j] += av * b[p * d.ldb + j];
            }
        }
    }
}

/// The loop of both SIMD drivers over C: whole `MR`×`NR` tiles, the last rows by a
/// shorter tile, and the columns past the last whole tile by [`tail_columns`]. `$tile` is
/// the module's `tile::<R>` (an `unsafe fn`, called from the driver's `unsafe fn` body).
#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
macro_rules! tiles {
    ($tile:ident, $d:ident, $a:ident, $b:ident, $c:ident) => {{
        let nf = $d.n / NR * NR;
        for j0 in (0..nf).step_by(NR) {
            let mut i = 0;
            while i + MR <= $d.m {
                $tile::<MR>($d, $a, $b, $c, i, j0);
                i += MR;
            }
            match $d.m - i {
                1 => $tile::<1>($d, $a, $b, $c, i, j0),
                2 => $tile::<2>($d, $a, $b, $c, i, j0),
                3 => $tile::<3>($d, $a, $b, $c, i, j0),
                4 => $tile::<4>($d, $a, $b, $c, i, j0),
                5 => $tile::<5>($d, $a, $b, $c, i, j0),
                _ => {}
            }
        }
        if nf < $d.n {
            tail_columns($d, nf, $a, $b, $c);
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{tail_columns, GemmDims, MR, NR};
    use std::arch::x86_64::*;

    /// One `R`×16 tile of C at (i0, j0): the products are summed in registers over k and
    /// added to C once.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize>(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32], i0: usize, j0: usize) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let (pa, pb) = (a.as_ptr().add(i0 * d.lda), b.as_ptr().add(j0));
        for p in 0..d.k {
            let b0 = _mm256_loadu_ps(pb.add(p * d.ldb));
            let b1 = _mm256_loadu_ps(pb.add(p * d.ldb + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*pa.add(r * d.lda + p));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let pc = c.as_mut_ptr().add((i0 + r) * d.ldc + j0);
            _mm256_storeu_ps(pc, _mm256_add_ps(_mm256_loadu_ps(pc), acc[0]));
            _mm256_storeu_ps(pc.add(8), _mm256_add_ps(_mm256_loadu_ps(pc.add(8)), acc[1]));
        }
    }

    /// [`super::gemm_acc`] for one block of k. Callers check the operands first.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gemm_acc(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
        tiles!(tile, d, a, b, c);
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon {
    use super::{tail_columns, GemmDims, MR, NR};
    use std::arch::aarch64::*;

    /// One `R`×16 tile of C at (i0, j0), as the x86 one.
    #[inline]
    unsafe fn tile<const R: usize>(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32], i0: usize, j0: usize) {
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        let (pa, pb) = (a.as_ptr().add(i0 * d.lda), b.as_ptr().add(j0));
        for p in 0..d.k {
            let row = pb.add(p * d.ldb);
            let bv = [vld1q_f32(row), vld1q_f32(row.add(4)), vld1q_f32(row.add(8)), vld1q_f32(row.add(12))];
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = vdupq_n_f32(*pa.add(r * d.lda + p));
                for q in 0..4 {
                    acc[q] = vfmaq_f32(acc[q], av, bv[q]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let pc = c.as_mut_ptr().add((i0 + r) * d.ldc + j0);
            for (q, acc) in acc.iter().enumerate() {
                vst1q_f32(pc.add(4 * q), vaddq_f32(vld1q_f32(pc.add(4 * q)), *acc));
            }
        }
    }

    /// [`super::gemm_acc`] for one block of k. Callers check the operands first.
    pub unsafe fn gemm_acc(d: GemmDims, a: &[f32], b: &[f32], c: &mut [f32]) {
        tiles!(tile, d, a, b, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Every tile height, column tails and a k past one block, with strides wider than the
    /// rows: the chosen path equals the reference.
    #[test]
    fn gemm_acc_matches_reference() {
        let mut rng = Rng::new(3);
        for &(m, k, n) in &[(1, 1, 1), (7, 33, 17), (17, 300, 48), (3, 4097, 7), (13, 513, 33), (6, 64, 16)] {
            let d = GemmDims { m, k, n, lda: k + 3, ldb: n + 5, ldc: n + 2 };
            let a = rand(&mut rng, m * d.lda);
            let b = rand(&mut rng, k * d.ldb);
            let c0 = rand(&mut rng, m * d.ldc);
            let (mut want, mut got) = (c0.clone(), c0.clone());
            gemm_acc_scalar(d, &a, &b, &mut want);
            gemm_acc(d, &a, &b, &mut got);
            for i in 0..m {
                for j in 0..d.ldc {
                    let (w, g) = (want[i * d.ldc + j], got[i * d.ldc + j]);
                    if j >= n {
                        assert_eq!(g, c0[i * d.ldc + j], "({m},{k},{n}): padding column {j} written");
                    } else {
                        assert!(
                            (w - g).abs() <= 1e-5 * (k as f32).sqrt() * (1.0 + w.abs()),
                            "({m},{k},{n}) [{i},{j}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
