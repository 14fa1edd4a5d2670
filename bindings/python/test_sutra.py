"""Checks the installed `sutra` package against the C API: run by tests/python_binding.rs as
`PYTHONPATH=SITE SUTRA_LIBRARY=LIBSUTRA python3 bindings/python/test_sutra.py REPO_ROOT`
after `pip install --target SITE ./bindings/python`; exits non-zero on failure and prints
`python binding ok: N checks` (N the number of check() calls passed) when everything holds."""

import math
import os
import re
import sys
import tempfile

# The package under test is the installed one: drop this script's folder (which holds the
# source package) from the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
import sutra  # noqa: E402
from sutra import Adapter, Model, Sampler, Session, SutraError, Tokenizer, Trainer  # noqa: E402

root = sys.argv[1]
MODEL = f"{root}/models/rwkv7-shakespeare-6x256/model-bf16.safetensors"
TOKENIZER = f"{root}/models/rwkv7-shakespeare-6x256/tokenizer.json"
n_checks = 0


def check(cond, what):
    global n_checks
    if not cond:
        raise AssertionError(what)
    n_checks += 1


def close(a, b, tol=1e-4):
    return len(a) == len(b) and all(abs(x - y) <= tol * (1 + abs(y)) for x, y in zip(a, b))


def raises(fn, status):
    try:
        fn()
    except SutraError as e:
        return e if e.status == status and e.status_name == sutra.status_name(status) else None
    return None


print(f"sutra from {sutra.__file__}; library {sutra.library_path()}")
check(re.fullmatch(r"\d+\.\d+\.\d+", sutra.version()), sutra.version())
if os.environ.get("SUTRA_LIBRARY"):
    check(sutra.library_path() == os.environ["SUTRA_LIBRARY"], "SUTRA_LIBRARY is used")

# The ctypes structures and prototypes agree with the header, field for field.
header = open(f"{root}/include/sutra.h", encoding="utf-8").read()
header = re.sub(r"//[^\n]*", "", header)
for cname, pystruct in [
    ("sutra_model_params", sutra._ModelParams),
    ("sutra_model_info", sutra._ModelInfo),
    ("sutra_generate_params", sutra._GenerateParams),
    ("sutra_generate_result", sutra._GenerateResult),
    ("sutra_train_params", sutra._TrainParams),
]:
    body = re.search(r"typedef struct %s \{(.*?)\} %s;" % (cname, cname), header, re.S).group(1)
    fields = [re.findall(r"(\w+)\s*$", decl.strip())[0] for decl in body.split(";")
              if decl.strip()]
    check(fields == [f for f, _ in pystruct._fields_], f"{cname}: {fields}")
for name, (_, argtypes) in sutra._PROTOTYPES.items():
    m = re.search(r"\b%s\(([^)]*)\);" % name, header)
    n_args = 0 if m is None or m.group(1).strip() in ("", "void") else m.group(1).count(",") + 1
    check(m is not None and n_args == len(argtypes), f"{name}: {n_args} arguments in sutra.h")

model = Model(MODEL, n_threads=2)
tok = Tokenizer(TOKENIZER)
info = model.info
check(model.n_vocab == 2048 == info.n_vocab and info.architecture == "rwkv7"
      and info.family == "rwkv" and info.version == 7 and info.n_layer == 6
      and info.weight_dtype == "bf16" and info.format == "safetensors", info)

text = "To be, or not to be"
ids = tok.encode(text)
check(len(ids) > 3 and tok.decode(ids) == text, ids)
prompt = [0] + ids

with Session(model) as s:
    logits = s.eval(prompt)
    check(len(logits) == 2048 and all(math.isfinite(x) for x in logits), "eval gives logits")
    s.reset()
    check(close(s.eval_stepwise(prompt), logits), "stepwise == prefill, after reset")
try:
    s.eval([1])
    check(False, "a closed session evaluated")
except ValueError as e:
    check("closed" in str(e), e)

# Generation: seeded, twice identical; the stream yields the same pieces.
def sampler():
    return Sampler(seed=7).top_k(40).top_p(0.9).temperature(0.8).dist()


def generate(**kw):
    with Session(model) as s:
        return s.generate(tok, sampler(), "ROMEO:\n", **kw)


a, b = generate(max_tokens=40), generate(max_tokens=40)
check(a == b and len(a.text) > 20 and a.n_generated == 40 and a.stop_reason == "max_tokens"
      and a.n_prompt_tokens == len(tok.encode("ROMEO:\n")), (a, b))
with Session(model) as s:
    gen = s.stream(tok, sampler(), "ROMEO:\n", max_tokens=40)
    pieces = []
    try:
        while True:
            pieces.append(next(gen))
    except StopIteration as done:
        streamed = done.value
check(len(pieces) > 10 and "".join(pieces) == a.text and streamed == a, (pieces, streamed))

# Stop strings end the text and are not emitted; a callback returning False stops.
stop = a.text[len(a.text) // 2: len(a.text) // 2 + 3]
cut = generate(max_tokens=40, stop=[stop])
check(cut.stop_reason == "stop_string" and stop not in cut.text
      and a.text.startswith(cut.text), (stop, cut))
seen = []
by_cb = generate(max_tokens=40, on_piece=lambda p: seen.append(p) or len(seen) < 5)
check(by_cb.stop_reason == "callback" and len(seen) == 5 and by_cb.text == "".join(seen), by_cb)
with Session(model) as s:
    gen = s.stream(tok, sampler(), "ROMEO:\n", max_tokens=40)
    first = [next(gen), next(gen)]
    gen.close()
    after = s.eval([0])
    check(first == pieces[:2] and len(after) == 2048, "closing the stream stops generation")

# State save / restore gives identical logits; a corrupted blob is refused.
with Session(model) as s:
    s.eval(prompt, logits=False)
    blob = s.save_state()
    x = s.eval([11, 12, 13])
    s.load_state(blob)
    y = s.eval([11, 12, 13])
    check(len(blob) == s.state_size() and x == y, "state restore reproduces the logits")
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x55
    check(raises(lambda: s.load_state(bytes(bad)), sutra.SUTRA_ERR_FORMAT), "corrupt blob")
    check(s.eval([11, 12, 13]) != y, "the refused blob left the session as it was")

    # Clone: same state, then independent.
    s.load_state(blob)
    c = s.clone()
    cx, sx = c.eval([11, 12, 13]), s.eval([11, 12, 13])
    c5 = c.eval([5])
    c.eval([6, 7])  # the clone goes on alone
    check(cx == sx == y and s.eval([5]) == c5 and c.model is model, "clone")
    c.close()

# Batch eval equals separate evals.
prompts = [prompt, tok.encode("ROMEO:\n"), [0, 7]]
sessions = [Session(model) for _ in prompts]
batched = sutra.batch_eval(sessions, prompts)
separate = [Session(model).eval(p) for p in prompts]
check(len(batched) == 3 and all(close(x, y) for x, y in zip(batched, separate)), "batch eval")
err = raises(lambda: sutra.batch_eval([sessions[0], sessions[1]], [[1], []]),
             sutra.SUTRA_ERR_INVALID_ARGUMENT)
check(err is not None and err.message, "an empty row in a batch is refused with a message")

# Sampler chain: greedy is the argmax; a logit bias can ban it; accept records tokens.
best = max(range(2048), key=lambda i: logits[i])
greedy = Sampler().greedy()
check(greedy.sample(logits) == best and greedy.sample(list(logits)) == best, "greedy")
banned = Sampler().logit_bias({best: -math.inf}).greedy().sample(logits)
check(banned != best and 0 <= banned < 2048, "logit bias")
pen = Sampler(3).penalties(64, 1.3, 0.2, 0.2).min_p(0.05).rwkv_presence(0.1, 0.1, 0.99).dist()
pen.accept(best)
check(0 <= pen.sample(logits) < 2048, "penalties, min_p, rwkv_presence")

# LoRA training: a step gives a finite loss, the saved adapter loads and changes the logits,
# and clearing it gives back the base logits.
with Trainer(model, lora_rank=4, lora_alpha=8, learning_rate=1e-2, seed=1) as tr:
    row = tok.encode("ROMEO:\nWhat light through yonder window breaks?")
    loss1 = tr.step(row[:-1], row[1:])
    loss2 = tr.step([row[:-1], row[:-1]], [row[1:], row[1:]])
    check(math.isfinite(loss1) and loss1 > 0 and math.isfinite(loss2) and loss2 < loss1,
          (loss1, loss2))
    with tempfile.TemporaryDirectory() as d:
        tr.save_adapter(f"{d}/mine")
        written = sorted(os.listdir(f"{d}/mine"))
        adapter = Adapter(model, f"{d}/mine")
    check("adapter_config.json" in written and "adapter_model.safetensors" in written, written)
with Session(model) as s:
    base = s.eval(prompt)
    s.reset()
    s.set_adapter(adapter, 1.0)
    adapter.close()  # the session keeps its own reference
    tuned = s.eval(prompt)
    s.reset()
    s.clear_adapters()
    check(tuned != base and s.eval(prompt) == base, "adapter changes logits; clear restores")
try:
    Trainer(model, lora_rnk=4)
    check(False, "unknown trainer parameter accepted")
except TypeError as e:
    check("lora_rnk" in str(e), e)

# Errors carry the status, its name and sutra_last_error()'s message naming the argument.
err = raises(lambda: Model("/no/such/model.safetensors"), sutra.SUTRA_ERR_IO)
check(err is not None and "/no/such/model.safetensors" in err.message
      and str(err).startswith("SUTRA_ERR_IO: "), err)
err = raises(lambda: Tokenizer("/no/such/tokenizer.json"), sutra.SUTRA_ERR_IO)
check(err is not None and "/no/such/tokenizer.json" in err.message, err)
with Session(model) as s:
    err = raises(lambda: s.eval([5000]), sutra.SUTRA_ERR_INVALID_ARGUMENT)
    check(err is not None and "5000" in err.message, err)

print(f"python binding ok: {n_checks} checks")
