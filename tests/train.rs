//! LoRA training against `tests/fixtures/golden/lora/` (PyTorch autograd in float64): the
//! loss and the gradient of every adapter tensor through the whole row (full BPTT).

mod common;
use common::*;
use sutra::format::SafetensorsFile;
use sutra::train::lora::LoraSet;
use sutra::Adapter;

#[test]
fn rwkv7_loss_and_gradients_match_autograd() {
    let m = load(&fixture("golden/rwkv7/model.safetensors"), 2);
    let a = Adapter::load(&m, &fixture("golden/lora/rwkv7")).unwrap();
    let set = LoraSet::from_adapter(&a).unwrap();
    let f = SafetensorsFile::open(&fixture("golden/lora/rwkv7/expected.safetensors"), false).unwrap();
    let ints = |k: &str| -> Vec<i64> {
        f.get(k).unwrap().bytes().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let tokens: Vec<u32> = ints("tokens").iter().map(|&t| t as u32).collect();
    let targets: Vec<i32> = ints("targets").iter().map(|&t| t as i32).collect();
    let want_loss = f.get("loss").unwrap().to_f32_vec().unwrap()[0];
    let mut grads = set.zero_grads();
    let n = targets.len() as f32;
    let (sum, count) = m.arch().train_row(&set, &tokens, &targets, 1.0 / n, &mut grads).unwrap();
    assert_eq!(count, targets.len());
    let loss = (sum / count as f64) as f32;
    assert!((loss - want_loss).abs() < 5e-5, "loss {loss} vs {want_loss}");
    for (i, p) in set.params.iter().enumerate() {
        for (half, got) in [("lora_A", &grads.da[i]), ("lora_B", &grads.db[i])] {
            let key = format!("grad.base_model.model.{}.{half}.weight", p.module);
            let want = f.get(&key).unwrap().to_f32_vec().unwrap();
            assert_close(got, &want, 1e-5, 1e-3, &key);
        }
    }
}
