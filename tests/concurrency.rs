//! One model, many threads (issue #13 part 3, "Sanitizers and concurrency in CI").
//!
//! Eight threads share one model (with its own pool of two workers) and one LoRA adapter.
//! Each thread runs its own seeded script over hundreds of sessions: evaluations on the
//! sequence and the step paths, batches, state saves and loads (also of blobs saved by other
//! sessions, and of corrupted blobs, which must change nothing), clones, resets, adapters
//! attached at several scales and detached, sessions dropped. Every result (the logits, the
//! state blobs, the state after a refused load) is hashed; the transcripts must equal,
//! bit for bit, those of the same scripts run one after another on one thread.
//!
//! `scripts/tsan.sh` runs this test under ThreadSanitizer. `SUTRA_CONCURRENCY_SESSIONS` sets
//! the sessions per thread (default 240; 40 under qemu, where `.ci/arm` runs the suite).

mod common;
use common::*;
use std::sync::{Arc, Barrier};
use std::time::Instant;
use sutra::{Adapter, Model, Session};

const THREADS: usize = 8;
/// Sessions alive at once in one thread, at most.
const LIVE: usize = 6;
/// State blobs a thread keeps to load later.
const BANK: usize = 12;

/// 240 sessions per thread (40 under an emulator, see [`emulated`]), or
/// `SUTRA_CONCURRENCY_SESSIONS`.
fn sessions_per_thread() -> usize {
    let default = if emulated() { 40 } else { 240 };
    std::env::var("SUTRA_CONCURRENCY_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: the scripts' own generator (independent of the library's).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// FNV-1a 64 of `bytes`.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn hash_f32(v: &[f32]) -> u64 {
    fnv(bytemuck::cast_slice(v))
}

/// One step of a transcript: what was done and the hash of what it produced.
type Entry = (&'static str, u64);

/// The seeded script of one thread; returns its transcript.
fn script(model: &Arc<Model>, adapter: &Arc<Adapter>, seed: u64, n_sessions: usize) -> Vec<Entry> {
    let mut rng = Rng(seed);
    let v = model.info().n_vocab;
    let mut live: Vec<Session> = Vec::new();
    let mut bank: Vec<Vec<u8>> = Vec::new();
    let mut out: Vec<Entry> = Vec::new();
    let mut logits = vec![0f32; v];
    let mut batch_logits = vec![0f32; 3 * v];
    let mut made = 0;
    // 1 to `max` random token ids.
    let tokens = |rng: &mut Rng, max: usize| -> Vec<u32> {
        let n = 1 + rng.below(max);
        (0..n).map(|_| rng.below(v) as u32).collect()
    };
    let scales = [0.0f32, 0.5, 1.0, 2.0];
    while made < n_sessions || !live.is_empty() {
        let can_make = made < n_sessions && live.len() < LIVE;
        if live.is_empty() || (can_make && rng.below(8) == 0) {
            let mut s = Session::new(model);
            if rng.below(4) == 0 {
                s.set_adapter(adapter, scales[1 + rng.below(3)]).unwrap();
            }
            out.push(("new", hash_f32(s.state())));
            live.push(s);
            made += 1;
            continue;
        }
        let i = rng.below(live.len());
        match rng.below(100) {
            0..=34 => {
                let t = tokens(&mut rng, 6);
                live[i].eval(&t, Some(&mut logits)).unwrap();
                out.push(("eval", hash_f32(&logits)));
            }
            35..=42 => {
                let t = tokens(&mut rng, 3);
                live[i].eval_stepwise(&t, Some(&mut logits)).unwrap();
                out.push(("eval_stepwise", hash_f32(&logits)));
            }
            43..=50 => {
                let blob = live[i].state_to_vec();
                out.push(("save", fnv(&blob)));
                if bank.len() < BANK {
                    bank.push(blob);
                } else {
                    let j = rng.below(BANK);
                    bank[j] = blob;
                }
            }
            51..=58 if !bank.is_empty() => {
                let j = rng.below(bank.len());
                live[i].load_state(&bank[j]).unwrap();
                out.push(("load", hash_f32(live[i].state())));
            }
            59..=61 if !bank.is_empty() => {
                // A corrupted or truncated blob is refused and changes nothing.
                let mut bad = bank[rng.below(bank.len())].clone();
                if rng.below(2) == 0 {
                    let at = rng.below(bad.len());
                    bad[at] ^= 1 << rng.below(8);
                } else {
                    bad.truncate(rng.below(bad.len()));
                }
                let before = hash_f32(live[i].state());
                assert!(live[i].load_state(&bad).is_err(), "a corrupted blob loaded");
                assert_eq!(hash_f32(live[i].state()), before, "a refused blob changed the state");
                out.push(("load_corrupt", before));
            }
            62..=69 if can_make => {
                let c = live[i].clone();
                out.push(("clone", hash_f32(c.state())));
                live.push(c);
                made += 1;
            }
            70..=74 => {
                live[i].reset();
                out.push(("reset", hash_f32(live[i].state())));
            }
            75..=80 => {
                let scale = scales[rng.below(scales.len())];
                live[i].set_adapter(adapter, scale).unwrap();
                out.push(("set_adapter", live[i].n_adapters() as u64));
            }
            81..=83 => {
                live[i].clear_adapters();
                out.push(("clear_adapters", 0));
            }
            84..=92 if live.len() >= 2 => {
                // A batch of 2 or 3 distinct sessions, in a seeded order.
                let n = 2 + rng.below(live.len().min(3) - 1);
                let mut picked: Vec<usize> = Vec::new();
                while picked.len() < n {
                    let k = rng.below(live.len());
                    if !picked.contains(&k) {
                        picked.push(k);
                    }
                }
                let toks: Vec<Vec<u32>> = picked.iter().map(|_| tokens(&mut rng, 4)).collect();
                let mut refs: Vec<(usize, &mut Session)> =
                    live.iter_mut().enumerate().filter(|(k, _)| picked.contains(k)).collect();
                refs.sort_by_key(|(k, _)| picked.iter().position(|p| p == k));
                let mut ss: Vec<&mut Session> = refs.into_iter().map(|(_, s)| s).collect();
                let views: Vec<&[u32]> = toks.iter().map(|t| &t[..]).collect();
                Session::eval_batch(&mut ss, &views, Some(&mut batch_logits[..n * v])).unwrap();
                out.push(("eval_batch", hash_f32(&batch_logits[..n * v])));
            }
            _ => {
                let s = live.swap_remove(i);
                out.push(("drop", hash_f32(s.state())));
            }
        }
    }
    out
}

fn seed(t: usize) -> u64 {
    0x5eed_0000 + 7919 * t as u64
}

#[test]
fn sessions_on_eight_threads_match_one_thread_bit_for_bit() {
    let model = load(&fixture("golden/rwkv7/model.safetensors"), 2);
    let adapter = Arc::new(Adapter::load(&model, &fixture("golden/lora/rwkv7")).expect("load the adapter"));
    let n = sessions_per_thread();

    let t0 = Instant::now();
    let want: Vec<Vec<Entry>> = (0..THREADS).map(|t| script(&model, &adapter, seed(t), n)).collect();
    let one_thread = t0.elapsed();

    let t0 = Instant::now();
    let barrier = Barrier::new(THREADS);
    let got: Vec<Vec<Entry>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (model, adapter, barrier) = (&model, &adapter, &barrier);
                sc.spawn(move || {
                    barrier.wait();
                    script(model, adapter, seed(t), n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a script thread panicked")).collect()
    });
    let threaded = t0.elapsed();

    for (t, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len(), "thread {t}: {} operations, {} on one thread", g.len(), w.len());
        if let Some(k) = g.iter().zip(w).position(|(a, b)| a != b) {
            panic!("thread {t}, operation {k}: {:?} on {THREADS} threads, {:?} on one thread", g[k], w[k]);
        }
    }
    let ops: usize = want.iter().map(Vec::len).sum();
    let kinds = ["eval", "eval_batch", "load", "load_corrupt", "clone", "set_adapter"];
    for kind in kinds {
        assert!(want.iter().all(|w| w.iter().any(|e| e.0 == kind)), "some thread never did {kind}");
    }
    eprintln!(
        "{THREADS} threads x {n} sessions, {ops} operations: one thread {:.2} s, {THREADS} threads {:.2} s",
        one_thread.as_secs_f64(),
        threaded.as_secs_f64()
    );
}
