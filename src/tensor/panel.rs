//! Group-quantized rows (q8, q4) repacked into interleaved panels of [`ROWS`] rows, the layout
//! of the panel products (`kernels::qpanel`): one activation load there serves 16 rows.
//!
//! A panel holds rows `16p..16p + 16` (rows past the matrix are zero weights with zero
//! scales). Per block of 32 columns it stores the weights of its 16 rows interleaved by
//! 4 columns: chunk `c` is 64 bytes, row `k`'s four bytes at `4k..4k + 4`, so that one 32-bit
//! lane of a 512-bit register (or one of a 128-bit register's four) holds one row:
//! - **q8** (512 bytes a block): chunk `c` (0..8) holds columns `4c..4c + 4`, each byte the
//!   weight with its top bit flipped (`w + 128`, unsigned, as `VPDPBUSD` takes it);
//! - **q4** (256 bytes a block): chunk `c` (0..4) holds level indices, columns `4c..4c + 4` in
//!   the low nibbles and `16 + 4c..16 + 4c + 4` in the high ones (a row's block of packed q4
//!   is four such 32-bit words: the packing is a transpose of 32-bit words).
//!
//! Each block also has its 16 rows' f16 scales (the scale of the group the block lies in),
//! so groups of 64 or 128 read the same as 32. Weights and scales are kept in two arrays,
//! the weights aligned to 64 bytes.

use super::block::BLOCK;
use rayon::prelude::*;

/// Rows per panel.
pub const ROWS: usize = 16;

/// Which rows a [`Panels`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelKind {
    /// 8-bit weights, 512 bytes per panel block.
    Q8,
    /// 4-bit level indices, 256 bytes per panel block.
    Q4,
    /// f32 weights, one column (16 floats, 64 bytes) after another: no blocks, no scales.
    F32,
    /// bf16 weights (raw bits), one column (16 values, 32 bytes) after another.
    BF16,
    /// f16 weights (raw bits), one column (16 values, 32 bytes) after another.
    F16,
}

impl PanelKind {
    /// Whether the weights are floats (one column per step, f32 activations).
    pub fn is_float(self) -> bool {
        matches!(self, PanelKind::F32 | PanelKind::BF16 | PanelKind::F16)
    }
}

/// A matrix's rows as interleaved panels (see the module documentation).
pub struct Panels {
    /// The row type.
    pub kind: PanelKind,
    /// Rows of the matrix (the last panel may be partly padding).
    pub rows: usize,
    /// Columns (a multiple of 32).
    pub cols: usize,
    /// Weight bytes, over-allocated so that `start` is 64-byte aligned.
    bytes: Vec<u8>,
    /// Offset of the first panel in `bytes`.
    start: usize,
    /// f16 scales, `[panels, blocks, 16]`.
    scales: Vec<u16>,
}

impl std::fmt::Debug for Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Panels({:?} {}x{})", self.kind, self.rows, self.cols)
    }
}

impl Panels {
    /// Weight bytes of one panel block.
    pub fn block_bytes(kind: PanelKind) -> usize {
        match kind {
            PanelKind::Q8 => ROWS * BLOCK,
            PanelKind::Q4 => ROWS * BLOCK / 2,
            PanelKind::F32 => ROWS * BLOCK * 4,
            PanelKind::BF16 | PanelKind::F16 => ROWS * BLOCK * 2,
        }
    }

    /// Number of panels.
    pub fn n_panels(&self) -> usize {
        self.rows.div_ceil(ROWS)
    }

    /// Blocks of 32 per row (f32 panels: columns, a block each).
    pub fn n_blocks(&self) -> usize {
        if self.kind.is_float() {
            self.cols
        } else {
            self.cols / BLOCK
        }
    }

    /// The bytes of one block of [`n_blocks`](Self::n_blocks).
    fn stride(&self) -> usize {
        match self.kind {
            PanelKind::F32 => 4 * ROWS,
            PanelKind::BF16 | PanelKind::F16 => 2 * ROWS,
            k => Self::block_bytes(k),
        }
    }

    /// Weight bytes of panel `p` (its blocks one after another; 64-byte aligned).
    pub fn panel(&self, p: usize) -> &[u8] {
        let n = self.n_blocks() * self.stride();
        &self.bytes[self.start + p * n..self.start + (p + 1) * n]
    }

    /// f16 scales of panel `p`: `[blocks, 16]`.
    pub fn panel_scales(&self, p: usize) -> &[u16] {
        let n = self.n_blocks() * ROWS;
        &self.scales[p * n..(p + 1) * n]
    }

    /// f32 panel `p`: `[cols, 16]` (column c's 16 rows at `16c..16c + 16`).
    pub fn panel_f32(&self, p: usize) -> &[f32] {
        bytemuck::cast_slice(self.panel(p))
    }

    /// bf16/f16 panel `p` (raw bits): `[cols, 16]`.
    pub fn panel_half(&self, p: usize) -> &[u16] {
        bytemuck::cast_slice(self.panel(p))
    }

    /// Repacks bf16 or f16 rows (raw bits `w` `[rows, cols]`; `kind` says which); padding rows
    /// are zeros.
    pub fn pack_half(kind: PanelKind, w: &[u16], rows: usize, cols: usize) -> Panels {
        assert!(matches!(kind, PanelKind::BF16 | PanelKind::F16), "pack_half: {kind:?}");
        let mut p = Panels::empty(kind, rows, cols);
        let (start, n) = (p.start, p.n_panels() * p.n_blocks() * p.stride());
        let out: &mut [u16] = bytemuck::cast_slice_mut(&mut p.bytes[start..start + n]);
        transpose_into_panels(w, rows, cols, out);
        p
    }

    /// Repacks f32 rows (`w` `[rows, cols]`, any `cols`); padding rows are zeros.
    pub fn pack_f32(w: &[f32], rows: usize, cols: usize) -> Panels {
        let mut p = Panels::empty(PanelKind::F32, rows, cols);
        let (start, n) = (p.start, p.n_panels() * p.n_blocks() * p.stride());
        let out: &mut [f32] = bytemuck::cast_slice_mut(&mut p.bytes[start..start + n]);
        transpose_into_panels(w, rows, cols, out);
        p
    }

    /// Repacks q8 rows (`q` `[rows, cols]`, f16 `scales` `[rows, groups]`); padding rows are
    /// zero weights.
    pub fn pack_q8(q: &[i8], scales: &[u16], group: usize, rows: usize, cols: usize) -> Panels {
        let flip = 0x8080_8080;
        let q: &[u8] = bytemuck::cast_slice(q);
        Panels::pack(PanelKind::Q8, q, scales, group, rows, cols, |w| w ^ flip, flip)
    }

    /// Repacks q4 rows (packed `q` `[rows, cols / 2]`, f16 `scales` `[rows, groups]`); padding
    /// rows get level 7 (zero).
    pub fn pack_q4(q: &[u8], scales: &[u16], group: usize, rows: usize, cols: usize) -> Panels {
        Panels::pack(PanelKind::Q4, q, scales, group, rows, cols, |w| w, 0x7777_7777)
    }

    /// Both packings (panels in parallel on the current rayon pool): each row's block is a run of 32-bit words (`w` words of `4·w` bytes),
    /// word `c` of row `k` going to chunk `c`, lane `k` (mapped by `map`; `pad` fills the
    /// padding rows).
    #[allow(clippy::too_many_arguments)]
    fn pack(
        kind: PanelKind,
        q: &[u8],
        scales: &[u16],
        group: usize,
        rows: usize,
        cols: usize,
        map: impl Fn(u32) -> u32 + Sync,
        pad: u32,
    ) -> Panels {
        let mut p = Panels::empty(kind, rows, cols);
        let (nb, bb) = (cols / BLOCK, Self::block_bytes(kind));
        let (words, row_bytes) = (bb / 64, bb / ROWS * nb);
        let start = p.start;
        let len = p.n_panels() * nb * bb;
        let out = &mut p.bytes[start..start + len];
        out.par_chunks_exact_mut(nb * bb).enumerate().for_each(|(pi, panel)| {
            for k in 0..ROWS {
                let r = pi * ROWS + k;
                let src = if r < rows { Some(&q[r * row_bytes..(r + 1) * row_bytes]) } else { None };
                for (b, blk) in panel.chunks_exact_mut(bb).enumerate() {
                    for c in 0..words {
                        let v = match src {
                            Some(s) => {
                                let at = b * 4 * words + 4 * c;
                                map(u32::from_le_bytes([s[at], s[at + 1], s[at + 2], s[at + 3]]))
                            }
                            None => pad,
                        };
                        blk[c * 64 + 4 * k..c * 64 + 4 * k + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        });
        p.fill_scales(scales, group);
        p
    }

    fn empty(kind: PanelKind, rows: usize, cols: usize) -> Panels {
        let f32 = kind.is_float();
        assert!(cols > 0 && (f32 || cols.is_multiple_of(BLOCK)), "Panels: cols {cols} is not a multiple of {BLOCK}");
        let mut p = Panels { kind, rows, cols, bytes: Vec::new(), start: 0, scales: Vec::new() };
        let n = rows.div_ceil(ROWS) * p.n_blocks() * p.stride();
        p.bytes = vec![0u8; n + 63];
        p.start = p.bytes.as_ptr().align_offset(64).min(63);
        if !f32 {
            p.scales = vec![0; rows.div_ceil(ROWS) * p.n_blocks() * ROWS];
        }
        p
    }

    fn fill_scales(&mut self, scales: &[u16], group: usize) {
        let (nb, ng) = (self.n_blocks(), self.cols.div_ceil(group));
        for r in 0..self.rows {
            let (pi, k) = (r / ROWS, r % ROWS);
            for b in 0..nb {
                self.scales[(pi * nb + b) * ROWS + k] = scales[r * ng + b * BLOCK / group];
            }
        }
    }

    /// Row `r`'s weight at column `j` as the scalar reference reads it (q8: the signed weight;
    /// q4: the level index).
    #[cfg(test)]
    fn weight(&self, r: usize, j: usize) -> i32 {
        let (pi, k, b) = (r / ROWS, r % ROWS, j / BLOCK);
        let blk = &self.panel(pi)[b * Self::block_bytes(self.kind)..];
        let jj = j % BLOCK;
        match self.kind {
            PanelKind::Q8 => {
                let v = blk[(jj / 4) * 64 + 4 * k + jj % 4];
                (v ^ 0x80) as i8 as i32
            }
            PanelKind::Q4 => {
                let jl = jj % 16;
                let v = blk[(jl / 4) * 64 + 4 * k + jl % 4];
                (if jj < 16 { v & 0x0f } else { v >> 4 }) as i32
            }
            _ => unreachable!("float panels are read with panel_f32 / panel_half"),
        }
    }

    /// Row `r`'s scale for block `b` (f16 bits).
    #[cfg(test)]
    fn scale(&self, r: usize, b: usize) -> u16 {
        self.panel_scales(r / ROWS)[b * ROWS + r % ROWS]
    }
}

/// Rows `[rows, cols]` of `w` into float panels `out` (`[panels, cols, 16]`, padding rows
/// left as they are), panels in parallel.
fn transpose_into_panels<E: Copy + Send + Sync>(w: &[E], rows: usize, cols: usize, out: &mut [E]) {
    out.par_chunks_mut(cols * ROWS).enumerate().for_each(|(pi, panel)| {
        for (k, row) in w.chunks_exact(cols).skip(pi * ROWS).take(ROWS.min(rows - pi * ROWS)).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                panel[c * ROWS + k] = v;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::tensor::block::*;

    /// Every weight and scale of both packings reads back where the row layout has it, on
    /// row counts that leave a partial panel and every group size.
    #[test]
    fn packing_reads_back() {
        let mut r = Rng::new(9);
        for &(rows, cols) in &[(1usize, 32usize), (17, 64), (33, 96)] {
            for group in [32usize, 64, 128] {
                let ng = n_groups(cols, group);
                let w: Vec<f32> = (0..rows * cols).map(|_| r.normal()).collect();
                let (mut q8, mut s8) = (vec![0i8; rows * cols], vec![0u16; rows * ng]);
                let (mut idx, mut q4, mut s4) =
                    (vec![0u8; rows * cols], vec![0u8; rows * cols / 2], vec![0u16; rows * ng]);
                for i in 0..rows {
                    let row = &w[i * cols..(i + 1) * cols];
                    quantize_q8_row(row, group, &mut q8[i * cols..(i + 1) * cols], &mut s8[i * ng..(i + 1) * ng]);
                    quantize_q4_row(
                        row,
                        group,
                        None,
                        &mut idx[i * cols..(i + 1) * cols],
                        &mut s4[i * ng..(i + 1) * ng],
                    );
                    pack_q4(&idx[i * cols..(i + 1) * cols], &mut q4[i * cols / 2..(i + 1) * cols / 2]);
                }
                {
                    let p8 = Panels::pack_q8(&q8, &s8, group, rows, cols);
                    let p4 = Panels::pack_q4(&q4, &s4, group, rows, cols);
                    assert_eq!(p8.panel(0).as_ptr() as usize % 64, 0, "aligned");
                    for i in 0..rows {
                        for j in 0..cols {
                            assert_eq!(p8.weight(i, j), q8[i * cols + j] as i32, "q8 [{i}][{j}]");
                            assert_eq!(p4.weight(i, j), idx[i * cols + j] as i32, "q4 [{i}][{j}]");
                        }
                        for b in 0..cols / 32 {
                            assert_eq!(p8.scale(i, b), s8[i * ng + b * 32 / group]);
                            assert_eq!(p4.scale(i, b), s4[i * ng + b * 32 / group]);
                        }
                    }
                    let pf = Panels::pack_f32(&w, rows, cols);
                    let bits: Vec<u16> = w.iter().map(|&v| crate::tensor::f32_to_bf16(v)).collect();
                    let ph = Panels::pack_half(PanelKind::BF16, &bits, rows, cols);
                    for i in 0..pf.n_panels() * ROWS {
                        for j in 0..cols {
                            let want = if i < rows { w[i * cols + j] } else { 0.0 };
                            assert_eq!(pf.panel_f32(i / ROWS)[j * ROWS + i % ROWS], want, "f32 [{i}][{j}]");
                            let want = if i < rows { bits[i * cols + j] } else { 0 };
                            assert_eq!(ph.panel_half(i / ROWS)[j * ROWS + i % ROWS], want, "bf16 [{i}][{j}]");
                        }
                    }
                    for i in rows..p8.n_panels() * ROWS {
                        for j in 0..cols {
                            assert_eq!((p8.weight(i, j), LEVELS[p4.weight(i, j) as usize]), (0, 0), "padding");
                        }
                        assert_eq!((p8.scale(i, 0), p4.scale(i, 0)), (0, 0), "padding scale");
                    }
                }
            }
        }
    }
}
