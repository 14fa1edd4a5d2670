//! Cross-entropy of next-token logits, with its gradient.

use super::real::Real;

/// Summed cross-entropy with a gradient scale: over the rows `t` of `logits` `[T, V]` with
/// `targets[t] >= 0` (negative targets are ignored), returns
/// `(Σ_t [logsumexp(logits[t]) − logits[t, targets[t]]], number of rows counted)` and
/// **accumulates** `scale·d(sum)/d logits` into `dlogits` `[T, V]`
/// (`scale·(softmax(logits[t]) − onehot(target))` on counted rows, nothing on ignored ones).
///
/// For a mean over a batch split into chunks, pass `scale = 1/N` with N the number of
/// counted targets of the whole batch, and add the sums up. Panics on a target ≥ V.
pub fn cross_entropy_sum<R: Real>(
    logits: &[R],
    n_vocab: usize,
    targets: &[i32],
    scale: R,
    dlogits: &mut [R],
) -> (R, usize) {
    assert!(logits.len() == targets.len() * n_vocab && dlogits.len() == logits.len(), "cross_entropy: shapes");
    let (mut sum, mut count) = (R::ZERO, 0usize);
    for (t, &tg) in targets.iter().enumerate() {
        if tg < 0 {
            continue;
        }
        let tg = tg as usize;
        assert!(tg < n_vocab, "cross_entropy: target {tg} at row {t} is not below the vocabulary size {n_vocab}");
        let row = &logits[t * n_vocab..(t + 1) * n_vocab];
        let mx = row.iter().copied().fold(row[0], |a, b| if b > a { b } else { a });
        let z = row.iter().map(|&v| (v - mx).exp()).sum::<R>();
        let lse = mx + z.ln();
        sum += lse - row[tg];
        count += 1;
        let drow = &mut dlogits[t * n_vocab..(t + 1) * n_vocab];
        for (d, &v) in drow.iter_mut().zip(row) {
            *d += scale * ((v - mx).exp() / z);
        }
        drow[tg] -= scale;
    }
    (sum, count)
}

/// Mean cross-entropy over the rows with `targets[t] >= 0` (the README's loss when no
/// target is negative): returns `(loss, rows counted)` and **overwrites** `dlogits`
/// `[T, V]` with d(loss)/d logits (zero rows where the target is ignored). With no row
/// counted the loss is 0 and `dlogits` all zero.
pub fn cross_entropy<R: Real>(logits: &[R], n_vocab: usize, targets: &[i32], dlogits: &mut [R]) -> (R, usize) {
    let count = targets.iter().filter(|&&t| t >= 0).count();
    dlogits.iter_mut().for_each(|d| *d = R::ZERO);
    if count == 0 {
        return (R::ZERO, 0);
    }
    let inv = R::ONE / R::from_f64(count as f64);
    let (sum, n) = cross_entropy_sum(logits, n_vocab, targets, inv, dlogits);
    (sum * inv, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::train::testutil::*;

    /// T = 5 rows of V = 7, one target ignored: the gradient against central differences of
    /// the mean loss on every logit; the loss against a direct evaluation; large logits
    /// (±300, where a naive exp overflows) stay finite.
    #[test]
    fn cross_entropy_gradient() {
        let mut rng = Rng::new(8);
        let (t, v) = (5usize, 7usize);
        let logits = rand_vec(&mut rng, t * v, -3.0, 3.0);
        let targets = [3, -1, 0, 6, 2];
        let mut d = vec![0.0; t * v];
        let (loss, n) = cross_entropy(&logits, v, &targets, &mut d);
        assert_eq!(n, 4);
        let mut want = 0.0;
        for (r, &tg) in targets.iter().enumerate() {
            if tg >= 0 {
                let row = &logits[r * v..(r + 1) * v];
                want += row.iter().map(|x| x.exp()).sum::<f64>().ln() - row[tg as usize];
            }
        }
        assert!((loss - want / 4.0).abs() < 1e-12, "{loss} vs {}", want / 4.0);
        assert!(d[v..2 * v].iter().all(|&g| g == 0.0), "ignored row has no gradient");
        // The sum form accumulates scale·d(sum): from buffers at OFF, scale 1/4 gives d + OFF.
        let mut ds = off(t * v);
        let (sum, _) = cross_entropy_sum(&logits, v, &targets, 0.25, &mut ds);
        assert!((sum / 4.0 - loss).abs() < 1e-12);
        assert!(ds.iter().zip(&d).all(|(a, b)| (a - OFF - b).abs() < 1e-15), "cross_entropy_sum accumulates");
        // The mean form overwrites.
        let mut d2 = off(t * v);
        cross_entropy(&logits, v, &targets, &mut d2);
        assert_eq!(d2, d, "cross_entropy overwrites");
        check_grad("ce dlogits", &logits, &d, 1000, |l| cross_entropy(l, v, &targets, &mut vec![0.0; t * v]).0);
        let big: Vec<f32> = (0..v).map(|i| if i == 2 { 300.0 } else { -300.0 }).collect();
        let mut d32 = vec![0f32; v];
        let (l32, _) = cross_entropy(&big, v, &[2], &mut d32);
        assert!(l32.is_finite() && l32.abs() < 1e-6 && d32.iter().all(|g| g.is_finite()));
    }
}
