"""libsutra from Python: a pure-Python ctypes binding of the C API in include/sutra.h.

    import sutra
    model = sutra.Model("models/rwkv7-shakespeare-6x256/model-bf16.safetensors")
    tok = sutra.Tokenizer("models/rwkv7-shakespeare-6x256/tokenizer.json")
    with sutra.Session(model) as s:
        smp = sutra.Sampler(seed=1).top_p(0.9).temperature(0.8).dist()
        for piece in s.stream(tok, smp, "ROMEO:\\n", max_tokens=50, stop=["\\n\\n"]):
            print(piece, end="")

The shared library is found, in this order: the path given to `load_library(path)`, the
`SUTRA_LIBRARY` environment variable, a libsutra.so / libsutra.dylib / sutra.dll bundled in
this package's folder, the system loader (`ctypes.util.find_library("sutra")`).

Every failing call raises `SutraError` (`.status`, `.status_name`, `.message` from
`sutra_last_error()`). Handles are released by `close()`, by leaving a `with` block, or when
their Python objects are collected. A `Model`, `Tokenizer` and `Adapter` may be shared by
threads; a `Session`, `Sampler` and `Trainer` are used by one thread at a time (the C API's
rules, docs/c-api.md).
"""

import array
import ctypes as C
import ctypes.util
import os
import queue
import sys
import threading
from collections import namedtuple
from dataclasses import dataclass

__version__ = "0.1.0"

__all__ = [
    "Adapter",
    "GenerateResult",
    "Model",
    "ModelInfo",
    "Sampler",
    "Session",
    "SutraError",
    "Tokenizer",
    "Trainer",
    "batch_eval",
    "library_path",
    "load_library",
    "status_name",
    "system_info",
    "version",
]

SUTRA_OK = 0
SUTRA_ERR_INVALID_ARGUMENT = 1
SUTRA_ERR_IO = 2
SUTRA_ERR_FORMAT = 3
SUTRA_ERR_UNSUPPORTED = 4
SUTRA_ERR_BUFFER_TOO_SMALL = 5
SUTRA_ERR_OUT_OF_MEMORY = 6
SUTRA_ERR_CANCELLED = 7
SUTRA_ERR_INTERNAL = 8

_FAMILIES = {0: "rwkv", 1: "mamba"}
_DTYPES = {0: "f32", 1: "f16", 2: "bf16", 3: "i8", 4: "u8", 5: "i64", 6: "q8", 7: "q4",
           8: "Q4_0", 9: "Q4_1", 10: "Q5_0", 11: "Q5_1", 12: "Q8_0", 13: "Q4_K", 14: "Q5_K", 15: "Q6_K"}
_FORMATS = {0: "safetensors", 1: "gguf", 2: "pth"}
_STOP_REASONS = {0: "max_tokens", 1: "stop_token", 2: "stop_string", 3: "callback"}


class SutraError(RuntimeError):
    """A libsutra call returned a status other than SUTRA_OK.

    `status` is the numeric `sutra_status`, `status_name` its name ("SUTRA_ERR_IO", ...),
    `message` the text of `sutra_last_error()` (it names the file, tensor or argument at fault).
    """

    def __init__(self, status, status_name, message):
        super().__init__(f"{status_name}: {message}")
        self.status = int(status)
        self.status_name = status_name
        self.message = message


# ---------------------------------------------------------------------------------------------
# C structures (field for field as in include/sutra.h; test_sutra.py compares them)

_PIECE_CB = C.CFUNCTYPE(C.c_bool, C.POINTER(C.c_char), C.c_size_t, C.c_void_p)
_PROGRESS_CB = C.CFUNCTYPE(C.c_bool, C.c_float, C.c_void_p)


class _ModelParams(C.Structure):
    _fields_ = [
        ("n_threads", C.c_int32),
        ("use_mmap", C.c_bool),
        ("progress_callback", _PROGRESS_CB),
        ("progress_user_data", C.c_void_p),
        ("check_finite", C.c_bool),
    ]


class _ModelInfo(C.Structure):
    _fields_ = [
        ("architecture", C.c_char_p),
        ("family", C.c_int),
        ("version", C.c_int32),
        ("n_layer", C.c_int32),
        ("n_embd", C.c_int32),
        ("n_vocab", C.c_int32),
        ("n_head", C.c_int32),
        ("head_size", C.c_int32),
        ("n_params", C.c_uint64),
        ("weight_dtype", C.c_int),
        ("bytes_per_token", C.c_uint64),
        ("format", C.c_int),
    ]


class _GenerateParams(C.Structure):
    _fields_ = [
        ("max_tokens", C.c_int32),
        ("stop_strings", C.POINTER(C.c_char_p)),
        ("n_stop_strings", C.c_size_t),
        ("stop_tokens", C.POINTER(C.c_int32)),
        ("n_stop_tokens", C.c_size_t),
        ("add_special_tokens", C.c_bool),
    ]


class _GenerateResult(C.Structure):
    _fields_ = [
        ("n_prompt_tokens", C.c_int32),
        ("n_generated", C.c_int32),
        ("stop_reason", C.c_int),
    ]


class _TrainParams(C.Structure):
    _fields_ = [
        ("lora_rank", C.c_int32),
        ("lora_alpha", C.c_float),
        ("target_modules", C.c_char_p),
        ("seed", C.c_uint64),
        ("learning_rate", C.c_float),
        ("beta1", C.c_float),
        ("beta2", C.c_float),
        ("eps", C.c_float),
        ("weight_decay", C.c_float),
        ("grad_clip", C.c_float),
        ("bptt_chunk", C.c_int32),
        ("train_state", C.c_int32),
        ("state_learning_rate", C.c_float),
    ]


# ---------------------------------------------------------------------------------------------
# The library

_P = C.c_void_p
_PP = C.POINTER(C.c_void_p)
_I32P = C.POINTER(C.c_int32)
_F32P = C.POINTER(C.c_float)
_U8P = C.POINTER(C.c_uint8)
_SZ = C.c_size_t
_SZP = C.POINTER(C.c_size_t)
_ST = C.c_int  # enum sutra_status

# name: (restype, argtypes)
_PROTOTYPES = {
    "sutra_version": (C.c_char_p, []),
    "sutra_last_error": (C.c_char_p, []),
    "sutra_status_name": (C.c_char_p, [C.c_int32]),
    "sutra_system_info": (C.c_char_p, []),
    "sutra_model_default_params": (_ModelParams, []),
    "sutra_model_load": (_ST, [C.c_char_p, C.POINTER(_ModelParams), _PP]),
    "sutra_model_load_from_memory": (_ST, [_U8P, _SZ, C.POINTER(_ModelParams), _PP]),
    "sutra_model_free": (None, [_P]),
    "sutra_model_n_vocab": (C.c_int32, [_P]),
    "sutra_model_get_info": (_ST, [_P, C.POINTER(_ModelInfo)]),
    "sutra_session_new": (_ST, [_P, _PP]),
    "sutra_session_free": (None, [_P]),
    "sutra_session_reset": (_ST, [_P]),
    "sutra_session_clone": (_ST, [_P, _PP]),
    "sutra_session_eval": (_ST, [_P, _I32P, _SZ, _F32P]),
    "sutra_session_eval_stepwise": (_ST, [_P, _I32P, _SZ, _F32P]),
    "sutra_batch_eval": (_ST, [_PP, _SZ, C.POINTER(_I32P), _SZP, _F32P]),
    "sutra_session_state_size": (_ST, [_P, _SZP]),
    "sutra_session_state_save": (_ST, [_P, _U8P, _SZ]),
    "sutra_session_state_load": (_ST, [_P, _U8P, _SZ]),
    "sutra_session_set_adapter": (_ST, [_P, _P, C.c_float]),
    "sutra_session_clear_adapters": (_ST, [_P]),
    "sutra_tokenizer_load": (_ST, [C.c_char_p, _PP]),
    "sutra_tokenizer_free": (None, [_P]),
    "sutra_tokenizer_n_vocab": (C.c_int32, [_P]),
    "sutra_tokenizer_token_id": (C.c_int32, [_P, C.c_char_p]),
    "sutra_tokenize": (_ST, [_P, C.c_char_p, _SZ, C.c_bool, _I32P, _SZ, _SZP]),
    "sutra_detokenize": (_ST, [_P, _I32P, _SZ, C.c_char_p, _SZ, _SZP]),
    "sutra_sampler_new": (_ST, [C.c_uint64, _PP]),
    "sutra_sampler_free": (None, [_P]),
    "sutra_sampler_add_greedy": (_ST, [_P]),
    "sutra_sampler_add_dist": (_ST, [_P]),
    "sutra_sampler_add_temperature": (_ST, [_P, C.c_float]),
    "sutra_sampler_add_top_k": (_ST, [_P, C.c_int32]),
    "sutra_sampler_add_top_p": (_ST, [_P, C.c_float, _SZ]),
    "sutra_sampler_add_min_p": (_ST, [_P, C.c_float]),
    "sutra_sampler_add_penalties": (_ST, [_P, C.c_int32, C.c_float, C.c_float, C.c_float]),
    "sutra_sampler_add_rwkv_presence": (_ST, [_P, C.c_float, C.c_float, C.c_float]),
    "sutra_sampler_add_logit_bias": (_ST, [_P, _I32P, _F32P, _SZ]),
    "sutra_sampler_sample": (_ST, [_P, _F32P, _SZ, _I32P]),
    "sutra_sampler_accept": (_ST, [_P, C.c_int32]),
    "sutra_sampler_reset": (_ST, [_P]),
    "sutra_generate_default_params": (_GenerateParams, []),
    "sutra_generate": (
        _ST,
        [_P, _P, _P, C.c_char_p, _SZ, C.POINTER(_GenerateParams), _PIECE_CB, _P,
         C.POINTER(_GenerateResult)],
    ),
    "sutra_adapter_load": (_ST, [_P, C.c_char_p, _PP]),
    "sutra_adapter_free": (None, [_P]),
    "sutra_train_default_params": (_TrainParams, []),
    "sutra_trainer_new": (_ST, [_P, _P, C.POINTER(_TrainParams), _PP]),
    "sutra_trainer_free": (None, [_P]),
    "sutra_trainer_compute": (_ST, [_P, _I32P, _I32P, _SZ, _SZ, _F32P]),
    "sutra_trainer_apply": (_ST, [_P]),
    "sutra_trainer_step": (_ST, [_P, _I32P, _I32P, _SZ, _SZ, _F32P]),
    "sutra_trainer_get_gradient": (_ST, [_P, C.c_char_p, _F32P, _SZ]),
    "sutra_trainer_get_adapter": (_ST, [_P, _PP]),
    "sutra_trainer_save_adapter": (_ST, [_P, C.c_char_p]),
    "sutra_trainer_state_size": (_ST, [_P, _SZP]),
    "sutra_trainer_get_state": (_ST, [_P, _U8P, _SZ]),
    "sutra_trainer_set_state": (_ST, [_P, _U8P, _SZ]),
}


def _bundled_names():
    if sys.platform == "darwin":
        return ["libsutra.dylib"]
    if os.name == "nt":
        return ["sutra.dll", "libsutra.dll"]
    return ["libsutra.so"]


class _Lib:
    """The loaded shared library with every prototype set."""

    def __init__(self, path):
        self.path = path
        self.c = C.CDLL(path)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            f = getattr(self.c, name)
            f.restype = restype
            f.argtypes = argtypes

    def check(self, status):
        """Raises SutraError unless status is SUTRA_OK; reads the message on this thread."""
        if status != SUTRA_OK:
            message = self.c.sutra_last_error().decode("utf-8", errors="replace")
            raise SutraError(status, self.c.sutra_status_name(status).decode(), message)


_LIB = None
_LIB_LOCK = threading.Lock()


def _find_library():
    env = os.environ.get("SUTRA_LIBRARY")
    if env:
        if not os.path.exists(env):
            raise OSError(f"SUTRA_LIBRARY={env!r}: no such file")
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _bundled_names():
        p = os.path.join(here, name)
        if os.path.exists(p):
            return p
    found = ctypes.util.find_library("sutra")
    if found:
        return found
    raise OSError(
        "libsutra not found: pass its path to sutra.load_library(path), set SUTRA_LIBRARY, "
        f"copy {_bundled_names()[0]} into {here} before `pip install`, or install it where "
        "the system loader finds it"
    )


def load_library(path=None):
    """Loads libsutra (from `path`, else SUTRA_LIBRARY, the bundled copy, the system loader)
    and makes it the library that the classes of this module use. Returns its path."""
    global _LIB
    with _LIB_LOCK:
        _LIB = _Lib(os.fspath(path) if path is not None else _find_library())
        return _LIB.path


def _lib():
    global _LIB
    if _LIB is None:
        with _LIB_LOCK:
            if _LIB is None:
                _LIB = _Lib(_find_library())
    return _LIB


def library_path():
    """The path (or loader name) of the libsutra in use, loading it if needed."""
    return _lib().path


def version():
    """The library's semver (sutra_version)."""
    return _lib().c.sutra_version().decode()


def system_info():
    """The CPU features found and the kernel path chosen (sutra_system_info)."""
    return _lib().c.sutra_system_info().decode()


def status_name(status):
    """The name of a status code ("SUTRA_ERR_FORMAT", ...)."""
    return _lib().c.sutra_status_name(int(status)).decode()


# ---------------------------------------------------------------------------------------------
# Helpers

def _path(p):
    return os.fsencode(os.fspath(p))


def _ints(values, what):
    try:
        values = list(values)
        return (C.c_int32 * len(values))(*values), len(values)
    except (TypeError, OverflowError) as e:
        raise TypeError(f"{what}: a sequence of int32 token ids ({e})") from None


def _floats(values):
    """A (pointer, length, keep-alive) triple over float32 values, without a copy when they
    already are a writable contiguous float32 buffer (array('f'), numpy float32)."""
    try:
        mv = memoryview(values)
        if mv.format == "f" and mv.contiguous and not mv.readonly and mv.ndim == 1:
            buf = (C.c_float * len(mv)).from_buffer(mv)
            return buf, len(mv), (mv, buf)
    except TypeError:
        pass
    arr = array.array("f", values)
    buf = (C.c_float * len(arr)).from_buffer(arr)
    return buf, len(arr), (arr, buf)


def _new_logits(n):
    arr = array.array("f", bytes(4 * n))
    return arr, (C.c_float * n).from_buffer(arr)


class _Handle:
    """An owned libsutra handle, released by its _free function once."""

    _free_name = None

    def _own(self, h):
        self._lib_ref = _lib()
        self._h = h

    @property
    def _handle(self):
        h = getattr(self, "_h", None)
        if not h:
            raise ValueError(f"{type(self).__name__} is closed")
        return h

    def close(self):
        """Releases the handle now (again is a no-op)."""
        h = getattr(self, "_h", None)
        if h:
            self._h = None
            getattr(self._lib_ref.c, self._free_name)(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


# ---------------------------------------------------------------------------------------------
# Models, sessions, tokenizers


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, as read from its checkpoint (sutra_model_info)."""

    architecture: str
    family: str
    version: int
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    head_size: int
    n_params: int
    weight_dtype: str
    bytes_per_token: int
    format: str


def _model_params(lib, n_threads, use_mmap, check_finite, progress):
    p = lib.c.sutra_model_default_params()
    if n_threads is not None:
        p.n_threads = n_threads
    if use_mmap is not None:
        p.use_mmap = use_mmap
    if check_finite is not None:
        p.check_finite = check_finite
    cb = None
    if progress is not None:
        def on_progress(fraction, _user):
            try:
                return progress(fraction) is not False
            except BaseException:
                return False
        cb = _PROGRESS_CB(on_progress)
        p.progress_callback = cb
    return p, cb


class Model(_Handle):
    """A loaded checkpoint (sutra_model_load): immutable, shareable by threads.

    `n_threads` (0 = one per core), `use_mmap`, `check_finite` default to
    sutra_model_default_params(); `progress(fraction)` returning False cancels.
    """

    _free_name = "sutra_model_free"

    def __init__(self, path, *, n_threads=None, use_mmap=None, check_finite=None, progress=None):
        lib = _lib()
        p, _cb = _model_params(lib, n_threads, use_mmap, check_finite, progress)
        h = C.c_void_p()
        lib.check(lib.c.sutra_model_load(_path(path), C.byref(p), C.byref(h)))
        self._own(h)

    @classmethod
    def from_bytes(cls, data, *, n_threads=None, check_finite=None, progress=None):
        """Loads a checkpoint from bytes in memory (sutra_model_load_from_memory; copied)."""
        lib = _lib()
        p, _cb = _model_params(lib, n_threads, None, check_finite, progress)
        data = bytes(data)
        buf = (C.c_uint8 * len(data)).from_buffer_copy(data)
        h = C.c_void_p()
        lib.check(lib.c.sutra_model_load_from_memory(buf, len(data), C.byref(p), C.byref(h)))
        self = cls.__new__(cls)
        self._own(h)
        return self

    @property
    def n_vocab(self):
        """Vocabulary size (the number of logits an eval returns)."""
        return self._lib_ref.c.sutra_model_n_vocab(self._handle)

    @property
    def info(self):
        """The architecture and sizes (sutra_model_get_info) as a ModelInfo."""
        i = _ModelInfo()
        self._lib_ref.check(self._lib_ref.c.sutra_model_get_info(self._handle, C.byref(i)))
        return ModelInfo(
            architecture=i.architecture.decode(),
            family=_FAMILIES.get(i.family, str(i.family)),
            version=i.version,
            n_layer=i.n_layer,
            n_embd=i.n_embd,
            n_vocab=i.n_vocab,
            n_head=i.n_head,
            head_size=i.head_size,
            n_params=i.n_params,
            weight_dtype=_DTYPES.get(i.weight_dtype, str(i.weight_dtype)),
            bytes_per_token=i.bytes_per_token,
            format=_FORMATS.get(i.format, str(i.format)),
        )


GenerateResult = namedtuple("GenerateResult", "text n_prompt_tokens n_generated stop_reason")
GenerateResult.__doc__ = """What a generation did: the text emitted, the prompt's token count,
the tokens generated, and why it stopped ("max_tokens", "stop_token", "stop_string",
"callback")."""


class Session(_Handle):
    """One sequence's recurrent state over a model (sutra_session_new). One thread at a time."""

    _free_name = "sutra_session_free"

    def __init__(self, model):
        lib = _lib()
        h = C.c_void_p()
        lib.check(lib.c.sutra_session_new(model._handle, C.byref(h)))
        self._own(h)
        self.model = model

    def _eval(self, fn, tokens, logits):
        arr, n = _ints(tokens, "tokens")
        if not logits:
            self._lib_ref.check(fn(self._handle, arr, n, None))
            return None
        out, buf = _new_logits(self.model.n_vocab)
        self._lib_ref.check(fn(self._handle, arr, n, buf))
        return out

    def eval(self, tokens, logits=True):
        """Feeds token ids (at least one); returns the logits after the last one as an
        array('f') of n_vocab floats (None when logits=False)."""
        return self._eval(self._lib_ref.c.sutra_session_eval, tokens, logits)

    def eval_stepwise(self, tokens, logits=True):
        """As eval, one token per step (the single-token path)."""
        return self._eval(self._lib_ref.c.sutra_session_eval_stepwise, tokens, logits)

    def reset(self):
        """Back to the initial state (also clears a failed evaluation's mark)."""
        self._lib_ref.check(self._lib_ref.c.sutra_session_reset(self._handle))

    def clone(self):
        """A new Session with a copy of this state (and adapters); both go on independently."""
        h = C.c_void_p()
        self._lib_ref.check(self._lib_ref.c.sutra_session_clone(self._handle, C.byref(h)))
        s = Session.__new__(Session)
        s._own(h)
        s.model = self.model
        return s

    def state_size(self):
        """Bytes of the state blob."""
        n = C.c_size_t()
        self._lib_ref.check(self._lib_ref.c.sutra_session_state_size(self._handle, C.byref(n)))
        return n.value

    def save_state(self):
        """The state blob (versioned, checksummed) as bytes; adapters are not in it."""
        n = self.state_size()
        buf = (C.c_uint8 * n)()
        self._lib_ref.check(self._lib_ref.c.sutra_session_state_save(self._handle, buf, n))
        return bytes(buf)

    def load_state(self, blob):
        """Restores a blob of save_state; a foreign or corrupted one raises SutraError
        (SUTRA_ERR_FORMAT) and leaves the session unchanged."""
        blob = bytes(blob)
        buf = (C.c_uint8 * len(blob)).from_buffer_copy(blob)
        self._lib_ref.check(self._lib_ref.c.sutra_session_state_load(self._handle, buf, len(blob)))

    def set_adapter(self, adapter, scale=1.0):
        """Computes with `adapter` at multiplier `scale` from the next eval (0 detaches it)."""
        self._lib_ref.check(
            self._lib_ref.c.sutra_session_set_adapter(self._handle, adapter._handle, scale))

    def clear_adapters(self):
        """Detaches every adapter (the state is kept)."""
        self._lib_ref.check(self._lib_ref.c.sutra_session_clear_adapters(self._handle))

    def generate(self, tokenizer, sampler, prompt, *, max_tokens=128, stop=(), stop_tokens=(),
                 add_special_tokens=False, on_piece=None):
        """Feeds `prompt`, then samples up to `max_tokens` tokens (sutra_generate); stop strings
        in `stop` end it and are never emitted. `on_piece(text)` is called with each piece
        (whole UTF-8 characters); returning False stops. Returns a GenerateResult whose text
        is every piece joined. The session keeps the state after the last fed token."""
        lib = self._lib_ref
        p = lib.c.sutra_generate_default_params()
        p.max_tokens = max_tokens
        p.add_special_tokens = add_special_tokens
        stops = [s.encode() if isinstance(s, str) else bytes(s) for s in stop]
        stop_arr = (C.c_char_p * max(len(stops), 1))(*stops)
        p.stop_strings = stop_arr
        p.n_stop_strings = len(stops)
        tok_arr, n_tok = _ints(stop_tokens, "stop_tokens")
        p.stop_tokens = tok_arr
        p.n_stop_tokens = n_tok
        pieces, raised = [], []

        def cb(ptr, n, _user):
            try:
                piece = C.string_at(ptr, n).decode("utf-8", errors="replace")
                pieces.append(piece)
                return on_piece is None or on_piece(piece) is not False
            except BaseException as e:  # re-raised below, never into the C caller
                raised.append(e)
                return False

        c_cb = _PIECE_CB(cb)
        raw = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
        res = _GenerateResult()
        status = lib.c.sutra_generate(self._handle, tokenizer._handle, sampler._handle, raw,
                                      len(raw), C.byref(p), c_cb, None, C.byref(res))
        if raised:
            raise raised[0]
        lib.check(status)
        return GenerateResult("".join(pieces), res.n_prompt_tokens, res.n_generated,
                              _STOP_REASONS.get(res.stop_reason, str(res.stop_reason)))

    def stream(self, tokenizer, sampler, prompt, **kwargs):
        """As generate, as a generator yielding each piece of text as it is made; its return
        value (StopIteration.value) is the GenerateResult. Closing the generator early stops
        the generation. Takes generate's keyword arguments except on_piece."""
        if "on_piece" in kwargs:
            raise TypeError("stream() yields the pieces: on_piece is generate()'s")
        out_q, in_q = queue.Queue(), queue.Queue()

        def on_piece(piece):
            out_q.put(("piece", piece))
            return in_q.get()

        def work():
            try:
                r = self.generate(tokenizer, sampler, prompt, on_piece=on_piece, **kwargs)
            except BaseException as e:
                out_q.put(("error", e))
            else:
                out_q.put(("done", r))

        worker = threading.Thread(target=work, name="sutra-generate", daemon=True)
        worker.start()
        try:
            while True:
                kind, value = out_q.get()
                if kind == "done":
                    return value
                if kind == "error":
                    raise value
                go_on = False
                try:
                    yield value
                    go_on = True
                finally:
                    in_q.put(go_on)
        finally:
            while worker.is_alive() or not out_q.empty():
                try:
                    kind, _ = out_q.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "piece":
                    in_q.put(False)
            worker.join()


def batch_eval(sessions, tokens, logits=True):
    """Advances distinct sessions of one model in one pass (sutra_batch_eval): session i is fed
    tokens[i]. Returns one array('f') of logits per session (None when logits=False); the same
    as separate evals. On error no session is changed."""
    sessions = list(sessions)
    tokens = list(tokens)
    if len(sessions) != len(tokens):
        raise ValueError(f"tokens: {len(tokens)} lists for {len(sessions)} sessions")
    lib = _lib()
    n = len(sessions)
    rows = [_ints(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
    hs = (C.c_void_p * max(n, 1))(*[s._handle for s in sessions])
    ptrs = (_I32P * max(n, 1))(*[C.cast(r[0], _I32P) for r in rows])
    lens = (C.c_size_t * max(n, 1))(*[r[1] for r in rows])
    if not logits or n == 0:
        lib.check(lib.c.sutra_batch_eval(hs, n, ptrs, lens, None))
        return None if not logits else []
    v = sessions[0].model.n_vocab
    out, buf = _new_logits(n * v)
    lib.check(lib.c.sutra_batch_eval(hs, n, ptrs, lens, buf))
    return [out[i * v:(i + 1) * v] for i in range(n)]


class Tokenizer(_Handle):
    """A tokenizer.json (BPE, WordPiece, Unigram) or an RWKV world vocabulary; shareable."""

    _free_name = "sutra_tokenizer_free"

    def __init__(self, path):
        lib = _lib()
        h = C.c_void_p()
        lib.check(lib.c.sutra_tokenizer_load(_path(path), C.byref(h)))
        self._own(h)

    @property
    def n_vocab(self):
        """Number of token ids (largest id + 1)."""
        return self._lib_ref.c.sutra_tokenizer_n_vocab(self._handle)

    def token_id(self, token):
        """The id of the token spelled `token`, or None."""
        i = self._lib_ref.c.sutra_tokenizer_token_id(self._handle, token.encode())
        return None if i < 0 else i

    def encode(self, text, add_special_tokens=False):
        """Token ids of `text` (a list of int)."""
        lib, raw, n = self._lib_ref, text.encode(), C.c_size_t()
        st = lib.c.sutra_tokenize(self._handle, raw, len(raw), add_special_tokens, None, 0,
                                  C.byref(n))
        if st != SUTRA_ERR_BUFFER_TOO_SMALL:
            lib.check(st)
        ids = (C.c_int32 * max(n.value, 1))()
        lib.check(lib.c.sutra_tokenize(self._handle, raw, len(raw), add_special_tokens, ids,
                                       n.value, C.byref(n)))
        return list(ids[: n.value])

    def decode(self, ids):
        """The text of token ids (invalid UTF-8 becomes U+FFFD)."""
        lib = self._lib_ref
        arr, k = _ints(ids, "ids")
        n = C.c_size_t()
        st = lib.c.sutra_detokenize(self._handle, arr, k, None, 0, C.byref(n))
        if st != SUTRA_ERR_BUFFER_TOO_SMALL:
            lib.check(st)
        buf = C.create_string_buffer(max(n.value, 1))
        lib.check(lib.c.sutra_detokenize(self._handle, arr, k, buf, n.value, C.byref(n)))
        return buf.raw[: n.value].decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Sampling


class Sampler(_Handle):
    """A sampler chain (sutra_sampler_new): stages applied in the order added, drawing with
    `seed`. Each stage method returns the sampler, so chains read left to right:
    `Sampler(42).top_p(0.9).temperature(0.8).dist()`. One thread at a time."""

    _free_name = "sutra_sampler_free"

    def __init__(self, seed=0):
        lib = _lib()
        h = C.c_void_p()
        lib.check(lib.c.sutra_sampler_new(seed, C.byref(h)))
        self._own(h)

    def _add(self, name, *args):
        self._lib_ref.check(getattr(self._lib_ref.c, name)(self._handle, *args))
        return self

    def greedy(self):
        """Appends greedy selection (argmax)."""
        return self._add("sutra_sampler_add_greedy")

    def dist(self):
        """Appends a draw from the softmax of the remaining candidates."""
        return self._add("sutra_sampler_add_dist")

    def temperature(self, t):
        """Appends temperature scaling (t <= 0 selects greedily)."""
        return self._add("sutra_sampler_add_temperature", t)

    def top_k(self, k):
        """Appends top-k truncation (0 is off)."""
        return self._add("sutra_sampler_add_top_k", k)

    def top_p(self, p, min_keep=1):
        """Appends nucleus truncation keeping at least `min_keep` candidates."""
        return self._add("sutra_sampler_add_top_p", p, min_keep)

    def min_p(self, p):
        """Appends min-p truncation."""
        return self._add("sutra_sampler_add_min_p", p)

    def penalties(self, last_n=64, repeat=1.0, frequency=0.0, presence=0.0):
        """Appends repetition/frequency/presence penalties over the last `last_n` tokens."""
        return self._add("sutra_sampler_add_penalties", last_n, repeat, frequency, presence)

    def rwkv_presence(self, presence, frequency, decay):
        """Appends RWKV's decaying presence penalty."""
        return self._add("sutra_sampler_add_rwkv_presence", presence, frequency, decay)

    def logit_bias(self, bias):
        """Appends a logit bias: `bias` maps token id to the value added (-inf bans it)."""
        items = list(dict(bias).items())
        ids, k = _ints([i for i, _ in items], "bias ids")
        vals = (C.c_float * max(k, 1))(*[float(b) for _, b in items])
        return self._add("sutra_sampler_add_logit_bias", ids, vals, k)

    def sample(self, logits):
        """Picks a token id from logits (a sequence of n_vocab floats); does not accept it."""
        buf, n, _keep = _floats(logits)
        out = C.c_int32()
        self._lib_ref.check(self._lib_ref.c.sutra_sampler_sample(self._handle, buf, n,
                                                                 C.byref(out)))
        return out.value

    def accept(self, token):
        """Records `token` as generated, for the penalties."""
        self._lib_ref.check(self._lib_ref.c.sutra_sampler_accept(self._handle, token))

    def reset(self):
        """Clears the history and restarts the random generator from the seed."""
        self._lib_ref.check(self._lib_ref.c.sutra_sampler_reset(self._handle))


# ---------------------------------------------------------------------------------------------
# LoRA adapters and training


class Adapter(_Handle):
    """A PEFT LoRA adapter loaded for a model (sutra_adapter_load); shareable by threads.
    Sessions it is attached to keep their own reference after close()."""

    _free_name = "sutra_adapter_free"

    def __init__(self, model, path):
        lib = _lib()
        h = C.c_void_p()
        lib.check(lib.c.sutra_adapter_load(model._handle, _path(path), C.byref(h)))
        self._own(h)


def _rows(values, what):
    values = list(values)
    if values and isinstance(values[0], (list, tuple, array.array)):
        rows = [list(r) for r in values]
    else:
        rows = [values]
    width = len(rows[0]) if rows else 0
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{what}: row {i} has {len(r)} tokens, row 0 has {width}")
    return rows, width


class Trainer(_Handle):
    """A LoRA trainer over a frozen model (sutra_trainer_new; a q8/q4 model makes it QLoRA).
    `init`: an Adapter to continue from, or None for a new one. Keyword arguments override
    fields of sutra_train_default_params(): lora_rank, lora_alpha, target_modules, seed,
    learning_rate, beta1, beta2, eps, weight_decay, grad_clip, bptt_chunk, train_state,
    state_learning_rate. One thread at a time."""

    _free_name = "sutra_trainer_free"

    def __init__(self, model, init=None, **params):
        lib = _lib()
        p = lib.c.sutra_train_default_params()
        names = {f for f, _ in _TrainParams._fields_}
        for k, v in params.items():
            if k not in names:
                raise TypeError(f"Trainer: unknown parameter {k!r} (known: {sorted(names)})")
            if k == "target_modules" and v is not None:  # the struct keeps the bytes alive
                v = v.encode() if isinstance(v, str) else ",".join(v).encode()
            setattr(p, k, v)
        h = C.c_void_p()
        lib.check(lib.c.sutra_trainer_new(model._handle, init._handle if init else None,
                                          C.byref(p), C.byref(h)))
        self._own(h)
        self.model = model

    def _batch(self, fn, tokens, targets):
        trows, width = _rows(tokens, "tokens")
        grows, gwidth = _rows(targets, "targets")
        if len(grows) != len(trows) or gwidth != width:
            raise ValueError(f"targets: {len(grows)}x{gwidth}, tokens are {len(trows)}x{width}")
        t, _ = _ints([x for r in trows for x in r], "tokens")
        g, _ = _ints([x for r in grows for x in r], "targets")
        loss = C.c_float()
        self._lib_ref.check(fn(self._handle, t, g, len(trows), width, C.byref(loss)))
        return loss.value

    def compute(self, tokens, targets):
        """Loss and gradient of one batch (rows of equal length; a flat list is one row;
        targets < 0 are ignored); the adapter is unchanged. Returns the mean loss."""
        return self._batch(self._lib_ref.c.sutra_trainer_compute, tokens, targets)

    def apply(self):
        """One optimizer step with the last computed gradient."""
        self._lib_ref.check(self._lib_ref.c.sutra_trainer_apply(self._handle))

    def step(self, tokens, targets):
        """compute, then apply; returns the batch's mean cross-entropy (before the step)."""
        return self._batch(self._lib_ref.c.sutra_trainer_step, tokens, targets)

    def gradient(self, name, n):
        """The last gradient of the adapter tensor `name` (n elements) as array('f')."""
        out, buf = _new_logits(n)
        self._lib_ref.check(self._lib_ref.c.sutra_trainer_get_gradient(self._handle,
                                                                       name.encode(), buf, n))
        return out

    def adapter(self):
        """A snapshot of the current adapter, as an Adapter for sessions."""
        h = C.c_void_p()
        self._lib_ref.check(self._lib_ref.c.sutra_trainer_get_adapter(self._handle, C.byref(h)))
        a = Adapter.__new__(Adapter)
        a._own(h)
        return a

    def save_adapter(self, directory):
        """Writes the current adapter as a PEFT folder (created if needed)."""
        self._lib_ref.check(self._lib_ref.c.sutra_trainer_save_adapter(self._handle,
                                                                       _path(directory)))

    def state(self):
        """The initial state rows start from, as a state blob (Session.load_state takes it)."""
        lib, n = self._lib_ref, C.c_size_t()
        lib.check(lib.c.sutra_trainer_state_size(self._handle, C.byref(n)))
        buf = (C.c_uint8 * n.value)()
        lib.check(lib.c.sutra_trainer_get_state(self._handle, buf, n.value))
        return bytes(buf)

    def set_state(self, blob):
        """Starts every row from a state blob of this model."""
        blob = bytes(blob)
        buf = (C.c_uint8 * len(blob)).from_buffer_copy(blob)
        self._lib_ref.check(self._lib_ref.c.sutra_trainer_set_state(self._handle, buf,
                                                                    len(blob)))
