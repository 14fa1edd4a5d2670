//! Inner loops of the Mamba selective scans (one state row updated and read out per call)
//! and of RWKV-7's WKV (one head's state per call).
//!
//! Each has one portable body, compiled as is and inside functions with the wider x86
//! features, picked at run time (the bodies are plain Rust over fixed blocks of lanes, which
//! the compiler vectorizes to the width the target allows). The Mamba scans run on AArch64 as
//! NEON intrinsics (two 4-lane registers per block of 8, [`exp_fast`] as [`neon::exp4`]) that
//! do the body's very arithmetic, lane for lane and unfused, so they return the same bits.
//! RWKV-7's step fuses its multiply-adds (`f32::mul_add`) and comes in two layouts: the state
//! as stored, rows reduced across lanes (one token), and the state transposed, reduced down
//! the columns (a run of tokens, after one transpose). Its bodies need no intrinsics to be
//! fast on NEON; on x86 the compiler leaves the transposed body scalar, so it runs there as
//! intrinsics that do the same arithmetic lane for lane.

#[cfg(any(target_arch = "x86_64", all(target_arch = "aarch64", target_feature = "neon")))]
use super::dot::{isa, Isa};
use super::exp_fast;

/// Mamba-1, one channel and token: `h ← exp(dt·a) ⊙ h + dtu·b`, returns `h·c`
/// (all slices of the state size S; `dtu` = dt·u).
#[inline]
pub fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::scan_update_dot(h, a, dt, dtu, b, c) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::scan_update_dot(h, a, dt, dtu, b, c) };
    }
    scan_body(h, a, dt, dtu, b, c)
}

/// Mamba-1, `G` channels and one token: channel g's state row `h[g·S..(g + 1)·S]` (and its
/// row of `a`) is stepped by [`scan_update_dot`] with `dt[g]` and `dtu[g]`, and `y[g]` is its
/// result, the same bits (`G` = `dt.len()`, `S` = `b.len()`). Where the CPU has AVX-512 and
/// S = 16 (every Mamba-1 checkpoint), 16 channels run at once and their 16 sums are reduced
/// together by one transposing reduction (in the body's order), instead of one horizontal sum
/// per channel.
pub fn scan_channels(h: &mut [f32], a: &[f32], dt: &[f32], dtu: &[f32], b: &[f32], c: &[f32], y: &mut [f32]) {
    let (g, s) = (dt.len(), b.len());
    assert!(
        h.len() == g * s && a.len() == g * s && dtu.len() == g && c.len() == s && y.len() == g,
        "scan_channels: lengths"
    );
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if s == 16 && isa() == Isa::Avx512 {
        done = g / 16 * 16;
        for k in (0..done).step_by(16) {
            let (st, ch) = (k * 16..(k + 16) * 16, k..k + 16);
            // SAFETY: AVX-512 F was detected; every slice has the lengths `scan16` reads (16
            // rows of 16, 16 channels, 16 states).
            unsafe { x86::scan16(&mut h[st.clone()], &a[st], &dt[ch.clone()], &dtu[ch.clone()], b, c, &mut y[ch]) };
        }
    }
    for k in done..g {
        let st = k * s..(k + 1) * s;
        y[k] = scan_update_dot(&mut h[st.clone()], &a[st], dt[k], dtu[k], b, c);
    }
}

/// Mamba-2, one head row p and token: `h ← decay·h + dx·b`, returns `h·c`.
#[inline]
pub fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::decay_update_dot(h, decay, dx, b, c) };
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa() != Isa::Scalar {
        // SAFETY: NEON is enabled for this target at compile time (baseline on AArch64).
        return unsafe { neon::decay_update_dot(h, decay, dx, b, c) };
    }
    decay_body(h, decay, dx, b, c)
}

/// The per-token vectors of one RWKV-7 head step (all of the head size N): decay `w`, the
/// in-context learning rate term `b` (= kk ⊙ a), key `k`, value `v`, the normalized key `kk`
/// and receptance `r`.
#[derive(Clone, Copy, Debug)]
pub struct Wkv7<'a> {
    /// Decay, per key column.
    pub w: &'a [f32],
    /// kk ⊙ a.
    pub b: &'a [f32],
    /// Key.
    pub k: &'a [f32],
    /// Value, per state row.
    pub v: &'a [f32],
    /// The normalized key (the removal direction).
    pub kk: &'a [f32],
    /// Receptance.
    pub r: &'a [f32],
}

/// RWKV-7, one head and token, over its state `s` `[N(value), N(key)]`: for each row i,
/// `s_i ← s_i ⊙ w + (s_i·(−kk))·b + v_i·k`, then `y_i = s_i·r` (all slices of N but `s`).
/// Two passes over the row (the first reduction, then the update fused with the second),
/// columns in blocks of 16 lanes where the CPU has AVX-512, else 8; the result depends on that
/// width only (the dispatched path equals the body at its width, bit for bit).
#[inline]
pub fn wkv7_update(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA were detected at run time.
        return unsafe { x86::wkv7_update(s, x, y) };
    }
    wkv7_body::<8>(s, x, y)
}

/// [`wkv7_update`] on the state stored transposed, `st` `[N(key), N(value)]` (column j of the
/// state contiguous): the layout a run of steps uses after one transpose, since every
/// reduction then runs down the columns, lanes over the rows i, with no horizontal sum. Each
/// `s_i` is reduced over j in the same order whatever the lane count, so every build returns
/// the same bits.
#[inline]
pub fn wkv7_update_cols(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: AVX2 and FMA (and AVX-512F where `isa` says so) were detected at run time.
        return unsafe { x86::wkv7_update_cols(st, x, y) };
    }
    wkv7_cols_body::<4, 4>(st, x, y)
}

/// [`wkv7_update_cols`] with the rows in blocks of `R` groups of `L` lanes (what the build
/// keeps in registers), the rest one at a time.
#[inline(always)]
fn wkv7_cols_body<const L: usize, const R: usize>(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
    let Wkv7 { w, b, k, v, kk, r } = x;
    let n = r.len();
    assert!(
        st.len() == n * n && [w.len(), b.len(), k.len(), v.len(), kk.len(), y.len()].iter().all(|&l| l == n),
        "wkv7_update_cols: lengths"
    );
    let full = n / (L * R) * (L * R);
    for i0 in (0..full).step_by(L * R) {
        wkv7_cols::<L, R>(st, i0, x, y);
    }
    for i0 in full..n {
        wkv7_cols::<1, 1>(st, i0, x, y);
    }
}

/// Lane group `q` of a block's column slice, as an array.
#[inline(always)]
fn lanes<const L: usize>(c: &[f32], q: usize) -> &[f32; L] {
    c[q * L..q * L + L].try_into().expect("L lanes")
}

/// Rows `i0..i0 + L·R` of the transposed step. Columns go in pairs (even j into one
/// accumulator, odd j into another, summed at the end), so the chains are half as long.
#[inline(always)]
fn wkv7_cols<const L: usize, const R: usize>(st: &mut [f32], i0: usize, x: Wkv7<'_>, y: &mut [f32]) {
    let Wkv7 { w, b, k, v, kk, r } = x;
    let n = r.len();
    let col = |j: usize| j * n + i0..j * n + i0 + L * R;
    let (mut e, mut o) = ([[0f32; L]; R], [[0f32; L]; R]);
    let mut j = 0;
    while j + 1 < n {
        let (c0, c1) = (&st[col(j)], &st[col(j + 1)]);
        for q in 0..R {
            let (c0, c1) = (lanes::<L>(c0, q), lanes::<L>(c1, q));
            for l in 0..L {
                e[q][l] = c0[l].mul_add(kk[j], e[q][l]);
                o[q][l] = c1[l].mul_add(kk[j + 1], o[q][l]);
            }
        }
        j += 2;
    }
    if j < n {
        let c0 = &st[col(j)];
        for (q, e) in e.iter_mut().enumerate() {
            let c0 = lanes::<L>(c0, q);
            for l in 0..L {
                e[l] = c0[l].mul_add(kk[j], e[l]);
            }
        }
    }
    let sa: [[f32; L]; R] = std::array::from_fn(|q| std::array::from_fn(|l| -(e[q][l] + o[q][l])));
    let vi: [[f32; L]; R] = std::array::from_fn(|q| *lanes::<L>(&v[i0..], q));
    // (A function, not a closure: a closure would not inherit the caller's target features
    // and, left out of line, would call libm's fmaf.)
    #[inline(always)]
    fn step<const L: usize, const R: usize>(
        c: &mut [f32],
        x: [f32; 4],
        sa: &[[f32; L]; R],
        vi: &[[f32; L]; R],
        acc: &mut [[f32; L]; R],
    ) {
        let [wj, bj, kj, rj] = x;
        for q in 0..R {
            let c: &mut [f32; L] = (&mut c[q * L..q * L + L]).try_into().expect("L lanes");
            for l in 0..L {
                let x = c[l].mul_add(wj, sa[q][l].mul_add(bj, vi[q][l] * kj));
                c[l] = x;
                acc[q][l] = x.mul_add(rj, acc[q][l]);
            }
        }
    }
    let (mut e, mut o) = ([[0f32; L]; R], [[0f32; L]; R]);
    let mut j = 0;
    while j + 1 < n {
        step(&mut st[col(j)], [w[j], b[j], k[j], r[j]], &sa, &vi, &mut e);
        step(&mut st[col(j + 1)], [w[j + 1], b[j + 1], k[j + 1], r[j + 1]], &sa, &vi, &mut o);
        j += 2;
    }
    if j < n {
        step(&mut st[col(j)], [w[j], b[j], k[j], r[j]], &sa, &vi, &mut e);
    }
    for q in 0..R {
        for l in 0..L {
            y[i0 + q * L + l] = e[q][l] + o[q][l];
        }
    }
}

#[inline(always)]
fn wkv7_body<const L: usize>(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
    let Wkv7 { w, b, k, v, kk, r } = x;
    let n = r.len();
    assert!(
        s.len() == n * n && [w.len(), b.len(), k.len(), v.len(), kk.len(), y.len()].iter().all(|&l| l == n),
        "wkv7_update: lengths"
    );
    // Rows are independent: four at a time give the reductions four independent chains (one
    // row at a time, the step is latency-bound). Each row's arithmetic is the same either way.
    let mut rows = s.chunks_exact_mut(n * WKV_ROWS);
    let mut at = 0;
    for block in &mut rows {
        wkv7_rows::<WKV_ROWS, L>(block, Wkv7 { v: &x.v[at..at + WKV_ROWS], ..x }, &mut y[at..at + WKV_ROWS]);
        at += WKV_ROWS;
    }
    for row in rows.into_remainder().chunks_exact_mut(n) {
        wkv7_rows::<1, L>(row, Wkv7 { v: &x.v[at..at + 1], ..x }, &mut y[at..at + 1]);
        at += 1;
    }
}

/// The sum of `L` lanes (`L` 1, 2 or a multiple of 4 whose quarter is a power of two) in the
/// order of a transposing reduction of 512-bit registers: each group of four lanes as
/// `(a0 + a2) + (a1 + a3)`, then the groups' sums by halving. A chain of log2 L additions
/// (an ordered sum is L − 1 long), and the order [`x86`]'s 16-row kernel reduces in.
#[inline(always)]
fn tree_sum<const L: usize>(a: [f32; L]) -> f32 {
    match L {
        1 => a[0],
        2 => a[0] + a[1],
        _ => {
            let mut q = [0f32; L];
            let groups = L / 4;
            for g in 0..groups {
                q[g] = (a[4 * g] + a[4 * g + 2]) + (a[4 * g + 1] + a[4 * g + 3]);
            }
            let mut w = groups;
            while w > 1 {
                w /= 2;
                for g in 0..w {
                    q[g] += q[g + w];
                }
            }
            q[0]
        }
    }
}

/// Rows the RWKV-7 step interleaves.
const WKV_ROWS: usize = 4;

/// [`wkv7_body`] on `R` consecutive rows of the state (`s` holds `R·n` floats), columns in
/// blocks of `L` lanes, every multiply-add fused (`f32::mul_add`: one instruction where the
/// build has FMA, NEON's baseline included, and the same correctly rounded result elsewhere).
#[inline(always)]
fn wkv7_rows<const R: usize, const L: usize>(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
    let Wkv7 { w, b, k, v, kk, r } = x;
    let n = r.len();
    let blocks = n / L * L;
    let mut acc = [[0f32; L]; R];
    for (c, ks) in kk[..blocks].chunks_exact(L).enumerate() {
        for (q, acc) in acc.iter_mut().enumerate() {
            let rs = &s[q * n + c * L..q * n + c * L + L];
            for l in 0..L {
                acc[l] = rs[l].mul_add(ks[l], acc[l]);
            }
        }
    }
    let mut sa = [0f32; R];
    for (q, sa) in sa.iter_mut().enumerate() {
        let row = &s[q * n..(q + 1) * n];
        let mut dot = tree_sum(acc[q]);
        for j in blocks..n {
            dot = row[j].mul_add(kk[j], dot);
        }
        *sa = -dot;
    }
    let mut acc = [[0f32; L]; R];
    for c in 0..blocks / L {
        let cols = c * L..c * L + L;
        let (ws, bs, ks, rr) = (&w[cols.clone()], &b[cols.clone()], &k[cols.clone()], &r[cols.clone()]);
        for (q, acc) in acc.iter_mut().enumerate() {
            let rs = &mut s[q * n + c * L..q * n + c * L + L];
            for l in 0..L {
                let x = rs[l].mul_add(ws[l], sa[q].mul_add(bs[l], v[q] * ks[l]));
                rs[l] = x;
                acc[l] = x.mul_add(rr[l], acc[l]);
            }
        }
    }
    for q in 0..R {
        let row = &mut s[q * n..(q + 1) * n];
        let mut out = tree_sum(acc[q]);
        for j in blocks..n {
            let x = row[j].mul_add(w[j], sa[q].mul_add(b[j], v[q] * k[j]));
            row[j] = x;
            out = x.mul_add(r[j], out);
        }
        y[q] = out;
    }
}

#[inline(always)]
fn scan_body(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
    let n = h.len();
    assert!(a.len() == n && b.len() == n && c.len() == n, "scan_update_dot: lengths");
    let mut acc = [0f32; 8];
    let blocks = n / 8 * 8;
    for (((h, a), b), c) in
        h[..blocks].chunks_exact_mut(8).zip(a.chunks_exact(8)).zip(b.chunks_exact(8)).zip(c.chunks_exact(8))
    {
        for l in 0..8 {
            let v = exp_fast(dt * a[l]) * h[l] + dtu * b[l];
            h[l] = v;
            acc[l] += v * c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in blocks..n {
        let v = exp_fast(dt * a[j]) * h[j] + dtu * b[j];
        h[j] = v;
        s += v * c[j];
    }
    s
}

#[inline(always)]
fn decay_body(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
    let n = h.len();
    assert!(b.len() == n && c.len() == n, "decay_update_dot: lengths");
    let mut acc = [0f32; 8];
    let blocks = n / 8 * 8;
    for ((h, b), c) in h[..blocks].chunks_exact_mut(8).zip(b.chunks_exact(8)).zip(c.chunks_exact(8)) {
        for l in 0..8 {
            let v = h[l] * decay + dx * b[l];
            h[l] = v;
            acc[l] += v * c[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for j in blocks..n {
        let v = h[j] * decay + dx * b[j];
        h[j] = v;
        s += v * c[j];
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Wkv7;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
        super::scan_body(h, a, dt, dtu, b, c)
    }

    /// [`super::scan_channels`] for 16 channels of state size 16 (each channel's 16 states one register).
    /// Each channel's products go into 8 lanes as the body's `acc` does (`(0 + p_l) + p_{l+8}`);
    /// the 16 channels' 8-lane accumulators are transposed (pairs of channels per register,
    /// then an 8 × 8 transpose within each 256-bit half) and summed lane after lane, the
    /// body's `acc.iter().sum()`.
    ///
    /// # Safety
    /// AVX-512 F must be available; `h` and `a` hold 256 floats, every other slice 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scan16(h: &mut [f32], a: &[f32], dt: &[f32], dtu: &[f32], b: &[f32], c: &[f32], y: &mut [f32]) {
        // SAFETY (the block): the lengths are the caller's promise.
        unsafe {
            // Each channel's update in the body's very arithmetic (`scan_body`, compiled here to
            // 16 lanes), its products p = h·c kept per lane for the reduction below.
            let mut prod = [[0f32; 16]; 16];
            for (g, pg) in prod.iter_mut().enumerate() {
                let (hg, ag) = (&mut h[16 * g..16 * g + 16], &a[16 * g..16 * g + 16]);
                for l in 0..16 {
                    let v = super::exp_fast(dt[g] * ag[l]) * hg[l] + dtu[g] * b[l];
                    hg[l] = v;
                    pg[l] = v * c[l];
                }
            }
            let p: [__m512; 16] = std::array::from_fn(|g| _mm512_loadu_ps(prod[g].as_ptr()));
            // z[j]: channel α_j's 8 accumulators in the low half, β_j's in the high half, with
            // (α, β) = (j, j + 4) for j < 4 and (j + 4, j + 8) after, so that the transpose
            // below leaves the channels in order.
            let zero = _mm512_setzero_ps();
            let z: [__m512; 8] = std::array::from_fn(|j| {
                let (al, be) = if j < 4 { (j, j + 4) } else { (j + 4, j + 8) };
                let lo = _mm512_shuffle_f32x4::<0b01_00_01_00>(p[al], p[be]);
                let hi = _mm512_shuffle_f32x4::<0b11_10_11_10>(p[al], p[be]);
                _mm512_add_ps(_mm512_add_ps(zero, lo), hi)
            });
            // 4 × 4 transposes within each 128-bit group: s[q] element e of z[4·(q / 4)..+4].
            let t: [__m512; 8] = std::array::from_fn(|i| {
                let (x, w) = (z[2 * (i / 2)], z[2 * (i / 2) + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(x, w)
                } else {
                    _mm512_unpackhi_ps(x, w)
                }
            });
            let s: [__m512; 8] = std::array::from_fn(|q| {
                let (base, e) = (4 * (q / 4), q % 4);
                let (x, w) = (t[base + e / 2], t[base + 2 + e / 2]);
                if e % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(x, w)
                } else {
                    _mm512_shuffle_ps::<0xEE>(x, w)
                }
            });
            // Lane l of the 16 channels: groups 0 and 2 of s[l], s[l + 4] (l < 4), else 1 and 3.
            let r = |l: usize| {
                if l < 4 {
                    _mm512_shuffle_f32x4::<0b10_00_10_00>(s[l], s[l + 4])
                } else {
                    _mm512_shuffle_f32x4::<0b11_01_11_01>(s[l - 4], s[l])
                }
            };
            let mut sum = r(0);
            for l in 1..8 {
                sum = _mm512_add_ps(sum, r(l));
            }
            _mm512_storeu_ps(y.as_mut_ptr(), sum);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
        super::decay_body(h, decay, dx, b, c)
    }

    /// The 16-lane body where the CPU has AVX-512, else the 8-lane one.
    pub unsafe fn wkv7_update(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        if super::isa() == super::Isa::Avx512 {
            wkv7_update_512(s, x, y)
        } else {
            wkv7_update_256(s, x, y)
        }
    }

    /// The transposed step, 32 rows a block (two 512-bit registers) where the CPU has
    /// AVX-512, else 16 (two 256-bit ones).
    pub unsafe fn wkv7_update_cols(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        if super::isa() == super::Isa::Avx512 {
            wkv7_cols_512(st, x, y)
        } else {
            wkv7_cols_256(st, x, y)
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn wkv7_cols_512(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        // SAFETY: AVX-512 F is enabled here.
        unsafe { wkv7_cols_simd::<__m512>(st, x, y) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn wkv7_cols_256(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        // SAFETY: AVX2 and FMA are enabled here.
        unsafe { wkv7_cols_simd::<__m256>(st, x, y) }
    }

    /// One register of f32 lanes and the few operations the transposed WKV step needs (the
    /// compiler does not vectorize `wkv7_cols`' fixed-size arrays into registers on x86; it
    /// leaves them scalar).
    trait Lanes: Copy {
        /// Lanes per register.
        const L: usize;
        unsafe fn zero() -> Self;
        unsafe fn splat(v: f32) -> Self;
        unsafe fn load(p: *const f32) -> Self;
        unsafe fn store(self, p: *mut f32);
        unsafe fn add(self, b: Self) -> Self;
        unsafe fn mul(self, b: Self) -> Self;
        /// `self · b + c`, fused (as `f32::mul_add`).
        unsafe fn fma(self, b: Self, c: Self) -> Self;
        /// `−self`, the sign flipped (as `f32`'s negation: −0 from +0).
        unsafe fn neg(self) -> Self;
    }

    // SAFETY (both impls): callers run these only inside functions with the feature enabled.
    impl Lanes for __m512 {
        const L: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm512_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm512_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            unsafe { _mm512_mul_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            unsafe { _mm512_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn neg(self) -> Self {
            unsafe { _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(self), _mm512_set1_epi32(i32::MIN))) }
        }
    }

    impl Lanes for __m256 {
        const L: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            unsafe { _mm256_add_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            unsafe { _mm256_mul_ps(self, b) }
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(self, b, c) }
        }
        #[inline(always)]
        unsafe fn neg(self) -> Self {
            unsafe { _mm256_xor_ps(self, _mm256_set1_ps(-0.0)) }
        }
    }

    /// [`super::wkv7_update_cols`] in registers of `V`: rows in blocks of four registers
    /// (then one), the rest through the portable body one row at a time. Each lane is one row
    /// `i` and does `wkv7_cols`' arithmetic in its order (even columns into one accumulator,
    /// odd into another, summed at the end), so the results are its bits.
    ///
    /// # Safety
    /// `V`'s instructions must be available (the caller's target features).
    #[inline(always)]
    unsafe fn wkv7_cols_simd<V: Lanes>(st: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        let n = x.r.len();
        assert!(
            st.len() == n * n && [x.w, x.b, x.k, x.v, x.kk].iter().all(|s| s.len() == n) && y.len() == n,
            "wkv7_update_cols: lengths"
        );
        let mut i0 = 0;
        // SAFETY: rows i0..i0 + R·L < n are inside every column (checked lengths).
        unsafe {
            while i0 + 4 * V::L <= n {
                wkv7_cols_block::<V, 4>(st, i0, x, y);
                i0 += 4 * V::L;
            }
            while i0 + V::L <= n {
                wkv7_cols_block::<V, 1>(st, i0, x, y);
                i0 += V::L;
            }
        }
        for i in i0..n {
            super::wkv7_cols::<1, 1>(st, i, x, y);
        }
    }

    /// Rows `i0..i0 + R·L` of [`wkv7_cols_simd`].
    ///
    /// # Safety
    /// As [`wkv7_cols_simd`], with `i0 + R·L ≤ n` and the lengths checked.
    #[inline(always)]
    unsafe fn wkv7_cols_block<V: Lanes, const R: usize>(st: &mut [f32], i0: usize, x: Wkv7<'_>, y: &mut [f32]) {
        let Wkv7 { w, b, k, v, kk, r } = x;
        let n = r.len();
        let ps = st.as_mut_ptr();
        // SAFETY (the block): column j's rows i0..i0 + R·L are st[j·n + i0..], inside st.
        unsafe {
            let at = |j: usize, q: usize| ps.add(j * n + i0 + q * V::L);
            let (mut e, mut o) = ([V::zero(); R], [V::zero(); R]);
            let mut j = 0;
            while j + 1 < n {
                let (k0, k1) = (V::splat(kk[j]), V::splat(kk[j + 1]));
                for q in 0..R {
                    e[q] = V::load(at(j, q)).fma(k0, e[q]);
                    o[q] = V::load(at(j + 1, q)).fma(k1, o[q]);
                }
                j += 2;
            }
            if j < n {
                let k0 = V::splat(kk[j]);
                for (q, e) in e.iter_mut().enumerate() {
                    *e = V::load(at(j, q)).fma(k0, *e);
                }
            }
            let sa: [V; R] = std::array::from_fn(|q| e[q].add(o[q]).neg());
            let vi: [V; R] = std::array::from_fn(|q| V::load(v.as_ptr().add(i0 + q * V::L)));
            // (A macro, not a closure: the closure is left out of line, and the intrinsics in
            // it become calls.)
            macro_rules! step {
                ($j:expr, $acc:expr) => {{
                    let j = $j;
                    let (wj, bj, kj, rj) = (V::splat(w[j]), V::splat(b[j]), V::splat(k[j]), V::splat(r[j]));
                    for q in 0..R {
                        let c = V::load(at(j, q)).fma(wj, sa[q].fma(bj, vi[q].mul(kj)));
                        c.store(at(j, q));
                        $acc[q] = c.fma(rj, $acc[q]);
                    }
                }};
            }
            let (mut e, mut o) = ([V::zero(); R], [V::zero(); R]);
            let mut j = 0;
            while j + 1 < n {
                step!(j, e);
                step!(j + 1, o);
                j += 2;
            }
            if j < n {
                step!(j, e);
            }
            for q in 0..R {
                e[q].add(o[q]).store(y.as_mut_ptr().add(i0 + q * V::L));
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn wkv7_update_512(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        let Wkv7 { w, b, k, v, kk, r } = x;
        let n = r.len();
        let ok = s.len() == n * n && [w.len(), b.len(), k.len(), v.len(), kk.len(), y.len()].iter().all(|&l| l == n);
        if n.is_multiple_of(16) && n > 0 && ok {
            // SAFETY: AVX-512 F is enabled here; the lengths were checked above.
            return unsafe { wkv7_rows16(s, x, y) };
        }
        super::wkv7_body::<16>(s, x, y)
    }

    /// The 16-lane body, 16 rows at a time, for N a multiple of 16: the rows' 16 partial sums
    /// are reduced together by a transposing reduction (one register of 16 row sums from 16
    /// registers, 45 instructions) instead of one row at a time. The same operations in the
    /// same order as `wkv7_body::<16>` (its `tree_sum` is this reduction's order), so the same
    /// bits.
    ///
    /// # Safety
    /// AVX-512 F must be available; `s` holds N·N floats and every other slice N.
    #[target_feature(enable = "avx512f")]
    unsafe fn wkv7_rows16(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        let Wkv7 { w, b, k, v, kk, r } = x;
        let n = r.len();
        let blocks = n / 16;
        let ps = s.as_mut_ptr();
        let (pw, pb, pk, pkk, pr) = (w.as_ptr(), b.as_ptr(), k.as_ptr(), kk.as_ptr(), r.as_ptr());
        for i0 in (0..n).step_by(16) {
            // SAFETY (the block): rows i0..i0 + 16 < N exist, each of N floats in blocks of 16.
            unsafe {
                let row = |q: usize| ps.add((i0 + q) * n);
                let mut acc = [_mm512_setzero_ps(); 16];
                for c in 0..blocks {
                    let kc = _mm512_loadu_ps(pkk.add(16 * c));
                    for (q, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_loadu_ps(row(q).add(16 * c)), kc, *a);
                    }
                }
                let mut sa = [0f32; 16];
                _mm512_storeu_ps(sa.as_mut_ptr(), _mm512_sub_ps(_mm512_setzero_ps(), reduce16(&acc)));
                // Column blocks outside, rows inside: w, b, k and r are loaded once per block
                // (each row's accumulator still takes the blocks in order).
                let mut acc = [_mm512_setzero_ps(); 16];
                for c in 0..blocks {
                    let (wc, bc) = (_mm512_loadu_ps(pw.add(16 * c)), _mm512_loadu_ps(pb.add(16 * c)));
                    let (kc, rc) = (_mm512_loadu_ps(pk.add(16 * c)), _mm512_loadu_ps(pr.add(16 * c)));
                    for (q, a) in acc.iter_mut().enumerate() {
                        let at = row(q).add(16 * c);
                        let t = _mm512_mul_ps(_mm512_set1_ps(v[i0 + q]), kc);
                        let t = _mm512_fmadd_ps(_mm512_set1_ps(sa[q]), bc, t);
                        let x = _mm512_fmadd_ps(_mm512_loadu_ps(at), wc, t);
                        _mm512_storeu_ps(at, x);
                        *a = _mm512_fmadd_ps(x, rc, *a);
                    }
                }
                _mm512_storeu_ps(y.as_mut_ptr().add(i0), reduce16(&acc));
            }
        }
    }

    /// Lane q of the result = the sum of the 16 lanes of `a[q]`, in `tree_sum::<16>`'s order:
    /// within each 128-bit group `(l0 + l2) + (l1 + l3)`, then groups `(g0 + g2) + (g1 + g3)`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce16(a: &[__m512; 16]) -> __m512 {
        // Pairs of rows: [x0+x2, y0+y2, x1+x3, y1+y3] in each 128-bit group.
        let t: [__m512; 8] = std::array::from_fn(|p| {
            let (x, y) = (a[2 * p], a[2 * p + 1]);
            _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y))
        });
        // Fours: [row 0, row 1, row 2, row 3] group sums in each 128-bit group.
        let u: [__m512; 4] = std::array::from_fn(|f| {
            let (x, y) = (t[2 * f], t[2 * f + 1]);
            _mm512_add_ps(_mm512_shuffle_ps::<0x44>(x, y), _mm512_shuffle_ps::<0xEE>(x, y))
        });
        // Across the groups: (g0 + g2), (g1 + g3) for rows 0–7 and 8–15, then their sum.
        let w01 = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(u[0], u[1]), _mm512_shuffle_f32x4::<0xEE>(u[0], u[1]));
        let w23 = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(u[2], u[3]), _mm512_shuffle_f32x4::<0xEE>(u[2], u[3]));
        _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(w01, w23), _mm512_shuffle_f32x4::<0xDD>(w01, w23))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn wkv7_update_256(s: &mut [f32], x: Wkv7<'_>, y: &mut [f32]) {
        super::wkv7_body::<8>(s, x, y)
    }
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    /// [`super::exp_fast`] on four lanes, the same operations in the same order (no fused
    /// multiply-adds, as Rust does not contract the scalar ones), hence the same bits.
    #[inline]
    #[target_feature(enable = "neon")]
    pub fn exp4(x: float32x4_t) -> float32x4_t {
        let x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0)), vdupq_n_f32(88.0));
        let round = vdupq_n_f32(12_582_912.0);
        let m = vaddq_f32(vmulq_f32(x, vdupq_n_f32(std::f32::consts::LOG2_E)), round);
        let n = vsubq_f32(m, round);
        let r =
            vsubq_f32(vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(0.693_359_4))), vmulq_f32(n, vdupq_n_f32(-2.121_944_4e-4)));
        let z = vmulq_f32(r, r);
        let step = |p: float32x4_t, c: f32| vaddq_f32(vmulq_f32(p, r), vdupq_n_f32(c));
        let p = step(
            step(step(step(step(vdupq_n_f32(1.987_569_1e-4), 1.398_2e-3), 8.333_452e-3), 4.166_579_6e-2), 0.166_666_65),
            0.5,
        );
        let y = vaddq_f32(vaddq_f32(vmulq_f32(p, z), r), vdupq_n_f32(1.0));
        let bits = vshlq_n_u32::<23>(vsubq_u32(vreinterpretq_u32_f32(m), vdupq_n_u32(0x4B40_0000 - 127)));
        vmulq_f32(y, vreinterpretq_f32_u32(bits))
    }

    /// Sums the eight lanes of `(lo, hi)` in the order of the scalar body's `acc.iter().sum()`.
    #[inline]
    #[target_feature(enable = "neon")]
    fn sum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
        let mut l = [0f32; 8];
        // SAFETY: `l` has room for the 8 floats stored.
        unsafe {
            vst1q_f32(l.as_mut_ptr(), lo);
            vst1q_f32(l.as_mut_ptr().add(4), hi);
        }
        l.iter().sum()
    }

    /// Mamba-1 scan row, blocks of 8 lanes in two registers.
    #[target_feature(enable = "neon")]
    pub fn scan_update_dot(h: &mut [f32], a: &[f32], dt: f32, dtu: f32, b: &[f32], c: &[f32]) -> f32 {
        let n = h.len();
        assert!(a.len() == n && b.len() == n && c.len() == n, "scan_update_dot: lengths");
        let (vdt, vdtu) = (vdupq_n_f32(dt), vdupq_n_f32(dtu));
        let mut acc = [vdupq_n_f32(0.0); 2];
        let blocks = n / 8 * 8;
        let mut i = 0;
        while i < blocks {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 4 * k;
                // SAFETY: j + 4 <= blocks <= n, the length of all four slices.
                unsafe {
                    let e = exp4(vmulq_f32(vdt, vld1q_f32(a.as_ptr().add(j))));
                    let v = vaddq_f32(
                        vmulq_f32(e, vld1q_f32(h.as_ptr().add(j))),
                        vmulq_f32(vdtu, vld1q_f32(b.as_ptr().add(j))),
                    );
                    vst1q_f32(h.as_mut_ptr().add(j), v);
                    *acc = vaddq_f32(*acc, vmulq_f32(v, vld1q_f32(c.as_ptr().add(j))));
                }
            }
            i += 8;
        }
        let mut s = sum8(acc[0], acc[1]);
        for j in blocks..n {
            let v = super::exp_fast(dt * a[j]) * h[j] + dtu * b[j];
            h[j] = v;
            s += v * c[j];
        }
        s
    }

    /// Mamba-2 scan row, blocks of 8 lanes in two registers.
    #[target_feature(enable = "neon")]
    pub fn decay_update_dot(h: &mut [f32], decay: f32, dx: f32, b: &[f32], c: &[f32]) -> f32 {
        let n = h.len();
        assert!(b.len() == n && c.len() == n, "decay_update_dot: lengths");
        let (vdecay, vdx) = (vdupq_n_f32(decay), vdupq_n_f32(dx));
        let mut acc = [vdupq_n_f32(0.0); 2];
        let blocks = n / 8 * 8;
        let mut i = 0;
        while i < blocks {
            for (k, acc) in acc.iter_mut().enumerate() {
                let j = i + 4 * k;
                // SAFETY: j + 4 <= blocks <= n, the length of all three slices.
                unsafe {
                    let v = vaddq_f32(
                        vmulq_f32(vld1q_f32(h.as_ptr().add(j)), vdecay),
                        vmulq_f32(vdx, vld1q_f32(b.as_ptr().add(j))),
                    );
                    vst1q_f32(h.as_mut_ptr().add(j), v);
                    *acc = vaddq_f32(*acc, vmulq_f32(v, vld1q_f32(c.as_ptr().add(j))));
                }
            }
            i += 8;
        }
        let mut s = sum8(acc[0], acc[1]);
        for j in blocks..n {
            let v = h[j] * decay + dx * b[j];
            h[j] = v;
            s += v * c[j];
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both scans equal a plain f64 evaluation, on lengths with and without a tail.
    #[test]
    fn scans_match_reference() {
        let mut seed = 5u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 16, 19, 128] {
            let h0: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..n).map(|_| -8.0 * rnd().abs()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let c: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let (dt, dtu) = (0.07f32, 0.03f32);
            let mut h = h0.clone();
            let y = scan_update_dot(&mut h, &a, dt, dtu, &b, &c);
            let mut want = 0f64;
            for j in 0..n {
                let v = (dt as f64 * a[j] as f64).exp() * h0[j] as f64 + dtu as f64 * b[j] as f64;
                assert!((h[j] as f64 - v).abs() < 1e-6, "scan n={n} h[{j}]");
                want += v * c[j] as f64;
            }
            assert!((y as f64 - want).abs() < 1e-5, "scan n={n}: {y} vs {want}");
            let mut h = h0.clone();
            let y = decay_update_dot(&mut h, 0.9, 0.2, &b, &c);
            let want: f64 = (0..n).map(|j| (0.9 * h0[j] as f64 + 0.2 * b[j] as f64) * c[j] as f64).sum();
            assert!((y as f64 - want).abs() < 1e-5, "decay n={n}: {y} vs {want}");
        }
    }
    /// The scan bodies' portable reference (what `SUTRA_FORCE_SCALAR=1` runs) equals every
    /// SIMD path bit for bit on odd lengths, h included.
    /// Channels stepped together (16 at a time with AVX-512 when S = 16) return, channel by
    /// channel, the bits of the one-channel scan, states included; odd channel counts leave a
    /// tail to the one-channel path.
    #[test]
    fn scan_channels_equal_one_channel_at_a_time() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for (g, s) in [(16usize, 16usize), (1, 16), (7, 16), (33, 16), (48, 16), (16, 8), (17, 5), (32, 64)] {
            let h0: Vec<f32> = (0..g * s).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..g * s).map(|_| -16.0 * rnd().abs()).collect();
            let dt: Vec<f32> = (0..g).map(|_| 0.5 * rnd().abs()).collect();
            let dtu: Vec<f32> = (0..g).map(|_| rnd()).collect();
            let (b, c): (Vec<f32>, Vec<f32>) = (0..s).map(|_| (rnd(), rnd())).unzip();
            let mut h = h0.clone();
            let mut y = vec![0f32; g];
            scan_channels(&mut h, &a, &dt, &dtu, &b, &c, &mut y);
            for k in 0..g {
                let row = k * s..(k + 1) * s;
                let mut hk = h0[row.clone()].to_vec();
                let want = scan_update_dot(&mut hk, &a[row.clone()], dt[k], dtu[k], &b, &c);
                assert_eq!(y[k].to_bits(), want.to_bits(), "y, channel {k} of {g}, S = {s}");
                assert!(
                    hk.iter().zip(&h[row]).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "h, channel {k} of {g}, S = {s}"
                );
            }
        }
    }

    #[test]
    fn simd_scans_equal_the_portable_body_bitwise() {
        type Scan = fn(&mut [f32], &[f32], f32, f32, &[f32], &[f32]) -> f32;
        type Decay = fn(&mut [f32], f32, f32, &[f32], &[f32]) -> f32;
        #[allow(unused_mut)]
        let mut paths: Vec<(&str, Scan, Decay)> = vec![("dispatch", scan_update_dot, decay_update_dot)];
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        paths.push((
            "neon",
            // SAFETY (of both calls): NEON is enabled for this target at compile time.
            |h, a, dt, dtu, b, c| unsafe { neon::scan_update_dot(h, a, dt, dtu, b, c) },
            |h, decay, dx, b, c| unsafe { neon::decay_update_dot(h, decay, dx, b, c) },
        ));
        let mut seed = 41u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 33, 4097] {
            let h0: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let a: Vec<f32> = (0..n).map(|_| -8.0 * rnd().abs()).collect();
            let b: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let c: Vec<f32> = (0..n).map(|_| rnd()).collect();
            let mut hw = h0.clone();
            let yw = scan_body(&mut hw, &a, 0.07, 0.03, &b, &c);
            let mut dw = h0.clone();
            let zw = decay_body(&mut dw, 0.9, 0.2, &b, &c);
            for (name, scan, decay) in &paths {
                let mut h = h0.clone();
                assert_eq!(scan(&mut h, &a, 0.07, 0.03, &b, &c).to_bits(), yw.to_bits(), "{name} scan n={n}");
                assert!(h.iter().zip(&hw).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} scan h n={n}");
                let mut h = h0.clone();
                assert_eq!(decay(&mut h, 0.9, 0.2, &b, &c).to_bits(), zw.to_bits(), "{name} decay n={n}");
                assert!(h.iter().zip(&dw).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} decay h n={n}");
            }
        }
    }

    /// Asserts that the stepped state (`state(i, j)`) and output `y` equal an f64 evaluation
    /// of the RWKV-7 step from `s0` `[N(value), N(key)]`.
    fn assert_wkv7_formula(s0: &[f32], x: Wkv7<'_>, state: &dyn Fn(usize, usize) -> f32, y: &[f32], what: &str) {
        let n = x.r.len();
        for i in 0..n {
            let row = &s0[i * n..(i + 1) * n];
            let sa: f64 = -(0..n).map(|j| row[j] as f64 * x.kk[j] as f64).sum::<f64>();
            let mut yi = 0f64;
            for (j, &sj) in row.iter().enumerate() {
                let e = sj as f64 * x.w[j] as f64 + sa * x.b[j] as f64 + x.v[i] as f64 * x.k[j] as f64;
                assert!((state(i, j) as f64 - e).abs() < 1e-5, "wkv7 {what} n={n} s[{i}][{j}]");
                yi += e * x.r[j] as f64;
            }
            assert!((y[i] as f64 - yi).abs() < 1e-4, "wkv7 {what} n={n} y[{i}]: {} vs {yi}", y[i]);
        }
    }

    /// The RWKV-7 head step equals an f64 evaluation of its formula (state and output), and
    /// the SIMD path the portable body bit for bit, on odd sizes.
    #[test]
    fn wkv7_update_matches_the_formula() {
        let mut seed = 43u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 16, 33, 48, 64, 70, 128] {
            let s0: Vec<f32> = (0..n * n).map(|_| rnd()).collect();
            let vecs: Vec<Vec<f32>> = (0..7).map(|_| (0..n).map(|_| rnd()).collect()).collect();
            let (w, b, k, v, kk, r) = (&vecs[0], &vecs[1], &vecs[2], &vecs[3], &vecs[4], &vecs[5]);
            let input = Wkv7 { w, b, k, v, kk, r };
            let (mut s, mut y) = (s0.clone(), vec![0f32; n]);
            wkv7_update(&mut s, input, &mut y);
            assert_wkv7_formula(&s0, input, &|i, j| s[i * n + j], &y, "rows");
            // The dispatched path is the body at its lane count, bit for bit.
            let (mut s2, mut y2) = (s0.clone(), vec![0f32; n]);
            #[cfg(target_arch = "x86_64")]
            if isa() == Isa::Avx512 {
                wkv7_body::<16>(&mut s2, input, &mut y2);
            } else {
                wkv7_body::<8>(&mut s2, input, &mut y2);
            }
            #[cfg(not(target_arch = "x86_64"))]
            wkv7_body::<8>(&mut s2, input, &mut y2);
            assert!(s.iter().chain(&y).zip(s2.iter().chain(&y2)).all(|(a, b)| a.to_bits() == b.to_bits()), "n={n}");
        }
    }

    /// The transposed RWKV-7 step equals the f64 formula on odd sizes, and returns the same
    /// bits whatever the row block (1, 16, 32 rows) and on the dispatched path.
    #[test]
    fn wkv7_update_cols_matches_the_formula() {
        let mut seed = 47u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        for n in [1usize, 7, 8, 33, 48, 64, 70, 128] {
            let s0: Vec<f32> = (0..n * n).map(|_| rnd()).collect();
            let vecs: Vec<Vec<f32>> = (0..6).map(|_| (0..n).map(|_| rnd()).collect()).collect();
            let (w, b, k, v, kk, r) = (&vecs[0], &vecs[1], &vecs[2], &vecs[3], &vecs[4], &vecs[5]);
            let input = Wkv7 { w, b, k, v, kk, r };
            // st[j][i] = s0[i][j]
            let st0: Vec<f32> = (0..n * n).map(|x| s0[(x % n) * n + x / n]).collect();
            let (mut st, mut y) = (st0.clone(), vec![0f32; n]);
            wkv7_update_cols(&mut st, input, &mut y);
            assert_wkv7_formula(&s0, input, &|i, j| st[j * n + i], &y, "cols");
            type Step = fn(&mut [f32], Wkv7<'_>, &mut [f32]);
            let run = |f: Step| {
                let (mut st2, mut y2) = (st0.clone(), vec![0f32; n]);
                f(&mut st2, input, &mut y2);
                st2.iter().chain(&y2).map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            let want: Vec<u32> = st.iter().chain(&y).map(|x| x.to_bits()).collect();
            assert_eq!(run(wkv7_cols_body::<1, 1>), want, "n={n} 1x1");
            assert_eq!(run(wkv7_cols_body::<4, 4>), want, "n={n} 4x4");
            assert_eq!(run(wkv7_cols_body::<8, 2>), want, "n={n} 8x2");
            assert_eq!(run(wkv7_cols_body::<16, 2>), want, "n={n} 16x2");
            // Both x86 register widths, where this CPU has them.
            #[cfg(target_arch = "x86_64")]
            {
                // SAFETY: each runs only where its features were detected.
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    assert_eq!(run(|s, x, y| unsafe { x86::wkv7_cols_256(s, x, y) }), want, "n={n} avx2");
                }
                if is_x86_feature_detected!("avx512f") {
                    assert_eq!(run(|s, x, y| unsafe { x86::wkv7_cols_512(s, x, y) }), want, "n={n} avx512");
                }
            }
        }
    }

    /// The four-lane exponential returns exp_fast's bits over the whole range and beyond the
    /// clamps (and so inherits its 3e-7 bound against libm, checked in `kernels::tests`).
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    #[test]
    fn neon_exp_equals_exp_fast() {
        use std::arch::aarch64::*;
        let mut xs: Vec<f32> = (0..=200_000).map(|i| -87.0 + 175.0 * i as f32 / 200_000.0).collect();
        xs.extend([-1e30, -88.5, -87.0, 0.0, -0.0, 1e-30, 88.0, 89.0, 1e30]);
        for chunk in xs.chunks(4).filter(|c| c.len() == 4) {
            let mut out = [0f32; 4];
            // SAFETY: chunk and out hold 4 floats each; NEON is enabled for this target.
            unsafe { vst1q_f32(out.as_mut_ptr(), neon::exp4(vld1q_f32(chunk.as_ptr()))) };
            for (x, y) in chunk.iter().zip(out) {
                assert_eq!(y.to_bits(), exp_fast(*x).to_bits(), "exp4({x})");
            }
        }
    }
}
