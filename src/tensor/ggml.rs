//! llama.cpp's (ggml's) block-quantized weight types, as GGUF files store them, and their
//! scalar reference dequantizers.
//!
//! Every type packs a row into blocks of 32 or 256 weights, each block self-contained (its
//! scales first or last, then its quantized values), little-endian. The layouts are ggml's
//! `block_q4_0` … `block_q6_K`; the dequantizers here are the reference that the products in
//! `kernels::ggml` are tested against, and they are themselves tested against the values
//! gguf-py computes on bytes written by llama.cpp's quantizer.

use super::dtype::f16_to_f32;

/// A ggml block type.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32 weights: f16 scale `d`, 16 bytes of nibbles; `w = d·(q − 8)`.
    Q4_0,
    /// 32 weights: f16 `d`, f16 minimum `m`, 16 bytes of nibbles; `w = d·q + m`.
    Q4_1,
    /// 32 weights: f16 `d`, 32 high bits, 16 bytes of low nibbles; `w = d·(q − 16)`.
    Q5_0,
    /// 32 weights: f16 `d`, f16 `m`, 32 high bits, 16 bytes of low nibbles; `w = d·q + m`.
    Q5_1,
    /// 32 weights: f16 `d`, 32 signed bytes; `w = d·q`.
    Q8_0,
    /// 256 weights in 8 sub-blocks of 32: f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales and
    /// minimums, 128 bytes of nibbles; `w = d·sc·q − dmin·m`.
    Q4_K,
    /// 256 weights as [`Q4_K`](Self::Q4_K) plus one high bit each (32 bytes).
    Q5_K,
    /// 256 weights in 16 sub-blocks of 16: 128 bytes of low nibbles, 64 bytes of high 2-bit
    /// pairs, 16 signed 8-bit scales, f16 `d`; `w = d·sc·(q − 32)`.
    Q6_K,
}

impl GgmlType {
    /// Every supported type.
    pub const ALL: [GgmlType; 8] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The type with GGUF type id `id` (`ggml_type`), if libsutra reads it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The GGUF type id (`ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
        }
    }

    /// llama.cpp's name of the type ("Q4_0", "Q4_K", …).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
        }
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 256,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
        }
    }

    /// Bytes of `n` weights (whole blocks; `n` a multiple of [`block_elems`](Self::block_elems)).
    pub fn size_of(self, n: usize) -> usize {
        n.div_ceil(self.block_elems()) * self.block_bytes()
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

/// Sub-block `j` (0..8) of a K-quant's 12 bytes of packed 6-bit scales and minimums:
/// `(scale, min)`.
#[inline]
pub fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

/// Dequantizes one block of `kind` (`block.len() == kind.block_bytes()`) into `out`
/// (`out.len() == kind.block_elems()`).
pub fn dequantize_block(kind: GgmlType, block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), kind.block_bytes());
    debug_assert_eq!(out.len(), kind.block_elems());
    match kind {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let d = f16_at(block, 0);
            let (m, qs, off) =
                if kind == GgmlType::Q4_1 { (f16_at(block, 2), &block[4..], 0.0) } else { (0.0, &block[2..], 8.0) };
            for j in 0..16 {
                out[j] = d * ((qs[j] & 0x0f) as f32 - off) + m;
                out[j + 16] = d * ((qs[j] >> 4) as f32 - off) + m;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let d = f16_at(block, 0);
            let (m, rest, off) =
                if kind == GgmlType::Q5_1 { (f16_at(block, 2), &block[4..], 0.0) } else { (0.0, &block[2..], 16.0) };
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let qs = &rest[4..];
            for j in 0..16 {
                let lo = (qs[j] & 0x0f) as u32 | (((qh >> j) & 1) << 4);
                let hi = (qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
                out[j] = d * (lo as f32 - off) + m;
                out[j + 16] = d * (hi as f32 - off) + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(block, 0);
            for (o, &q) in out.iter_mut().zip(&block[2..]) {
                *o = d * (q as i8) as f32;
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            let scales = &block[4..16];
            let (qh, ql) =
                if kind == GgmlType::Q5_K { (&block[16..48], &block[48..]) } else { (&[][..], &block[16..]) };
            // Four chunks of 64 weights: the low nibbles of 32 bytes, then their high nibbles.
            for c in 0..4 {
                for half in 0..2 {
                    let j = 2 * c + half;
                    let (sc, mn) = k_scale_min(scales, j);
                    let (dl, ml) = (d * sc as f32, dmin * mn as f32);
                    for l in 0..32 {
                        let byte = ql[32 * c + l];
                        let mut q = if half == 0 { byte & 0x0f } else { byte >> 4 } as u32;
                        if !qh.is_empty() {
                            q |= ((qh[l] >> j) as u32 & 1) << 4;
                        }
                        out[32 * j + l] = dl * q as f32 - ml;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let (ql, qh, sc) = (&block[..128], &block[128..192], &block[192..208]);
            let d = f16_at(block, 208);
            // Two halves of 128 weights, each from 64 low-nibble bytes and 32 high-bit bytes.
            for h in 0..2 {
                let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
                let y = &mut out[128 * h..];
                for l in 0..32 {
                    let is = l / 16;
                    let q = |lo: u8, shift: u32| ((lo as i32) | ((((qh[l] as u32) >> shift) & 3) << 4) as i32) - 32;
                    let q1 = q(ql[l] & 0x0f, 0);
                    let q2 = q(ql[l + 32] & 0x0f, 2);
                    let q3 = q(ql[l] >> 4, 4);
                    let q4 = q(ql[l + 32] >> 4, 6);
                    y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                    y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                    y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                    y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                }
            }
        }
    }
}

/// Dequantizes a row of whole blocks (`bytes.len() == kind.size_of(out.len())`) into `out`.
pub fn dequantize_row(kind: GgmlType, bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(kind.block_bytes()).zip(out.chunks_exact_mut(kind.block_elems())) {
        dequantize_block(kind, block, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes are ggml's (`ggml_type_size`), and ids round-trip.
    #[test]
    fn layouts() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(t.size_of(t.block_elems() * 3), 3 * t.block_bytes());
        }
        assert_eq!(GgmlType::from_id(0), None);
        assert_eq!(GgmlType::from_id(9), None);
    }

    /// A hand-built Q4_0 and Q8_0 block decode to what their definitions say.
    #[test]
    fn q4_0_and_q8_0_by_hand() {
        let mut b = vec![0u8; 18];
        b[..2].copy_from_slice(&crate::tensor::f32_to_f16(0.5).to_le_bytes());
        b[2] = 0x3f; // weight 0: 0xf − 8 = 7; weight 16: 3 − 8 = −5
        let mut out = [0f32; 32];
        dequantize_block(GgmlType::Q4_0, &b, &mut out);
        assert_eq!((out[0], out[16], out[1]), (3.5, -2.5, -4.0));
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&crate::tensor::f32_to_f16(0.25).to_le_bytes());
        b[2] = (-4i8) as u8;
        b[33] = 8;
        dequantize_block(GgmlType::Q8_0, &b, &mut out);
        assert_eq!((out[0], out[31], out[1]), (-1.0, 2.0, 0.0));
    }
}
