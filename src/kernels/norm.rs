//! Normalizations: layer norm, group norm, RMS norm and per-head L2 normalization.

/// LayerNorm: `out = (x - mean) / sqrt(var + eps) * w + b` (biased variance, as PyTorch).
pub fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * inv * w[i] + b[i];
    }
}

/// GroupNorm over `groups` equal contiguous groups of `x`, in place, with affine `w`, `b`.
pub fn group_norm(x: &mut [f32], groups: usize, w: &[f32], b: &[f32], eps: f32) {
    let g = x.len() / groups;
    for (h, xs) in x.chunks_mut(g).enumerate() {
        let n = g as f32;
        let mean = xs.iter().sum::<f32>() / n;
        let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in xs.iter_mut().enumerate() {
            *v = (*v - mean) * inv * w[h * g + i] + b[h * g + i];
        }
    }
}

/// RMSNorm: `out = x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for i in 0..x.len() {
        out[i] = x[i] * inv * w[i];
    }
}

/// L2-normalizes each of the `groups` contiguous groups of `x` in place: `x / max(‖x‖, eps)`.
pub fn l2_normalize(x: &mut [f32], groups: usize, eps: f32) {
    let g = x.len() / groups;
    for xs in x.chunks_mut(g) {
        let norm = xs.iter().map(|v| v * v).sum::<f32>().sqrt().max(eps);
        xs.iter_mut().for_each(|v| *v /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centers_and_scales() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut out = [0.0; 4];
        layer_norm(&x, &[1.0; 4], &[0.5; 4], 0.0, &mut out);
        let mean: f32 = out.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.5).abs() < 1e-6);
        assert!((out[3] - 0.5 - 3.0 / 5f32.sqrt()).abs() < 1e-5);
    }

    #[test]
    fn group_norm_normalizes_each_group() {
        let mut x = [1.0, 3.0, 10.0, 30.0];
        group_norm(&mut x, 2, &[1.0; 4], &[0.0; 4], 0.0);
        assert!((x[0] + 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6);
        assert!((x[2] + 1.0).abs() < 1e-6 && (x[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn l2_normalize_gives_unit_groups() {
        let mut x = [3.0, 4.0, 0.0, 0.0];
        l2_normalize(&mut x, 2, 1e-12);
        assert_eq!(x, [0.6, 0.8, 0.0, 0.0]);
    }
}
