"""Checks the Python binding against the C API: run by tests/python_binding.rs as
`python3 bindings/python/test_sutra.py LIBSUTRA_SO REPO_ROOT`; exits non-zero on failure."""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sutra import Library, SutraError  # noqa: E402

lib = Library(sys.argv[1])
root = sys.argv[2]
assert lib.version().count(".") == 2, lib.version()
model = lib.load_model(f"{root}/models/rwkv7-shakespeare-6x256/model-bf16.safetensors")
tok = lib.load_tokenizer(f"{root}/models/rwkv7-shakespeare-6x256/tokenizer.json")
assert lib.n_vocab(model) == 2048
text = "To be, or not to be"
ids = lib.tokenize(tok, text)
assert lib.detokenize(tok, ids) == text, ids
logits = lib.eval(model, [0] + ids)
assert len(logits) == 2048 and all(abs(x) < 100 for x in logits)
a = lib.generate(model, tok, "ROMEO:\n", max_tokens=30, seed=3)
b = lib.generate(model, tok, "ROMEO:\n", max_tokens=30, seed=3)
assert a == b and len(a) > 10, (a, b)
try:
    lib.load_model("/no/such/model.safetensors")
    raise AssertionError("loading a missing file must fail")
except SutraError as e:
    assert "SUTRA_ERR_IO" in str(e) and "/no/such/model.safetensors" in str(e), e
print("python binding ok: 6 checks")
