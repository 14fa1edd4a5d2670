"""libsutra from Python, through ctypes (no build step): a thin wrapper over include/sutra.h.

    from sutra import Library
    lib = Library("target/release/libsutra.so")
    model = lib.load_model("models/rwkv7-shakespeare-6x256/model-bf16.safetensors")
    tok = lib.load_tokenizer("models/rwkv7-shakespeare-6x256/tokenizer.json")
    print(lib.generate(model, tok, "ROMEO:\\n", max_tokens=50, seed=1))

Every failing call raises SutraError with the status name and sutra_last_error().
Handles are freed when their Python objects are collected.
"""

import ctypes as C

_PIECE_CB = C.CFUNCTYPE(C.c_bool, C.c_char_p, C.c_size_t, C.c_void_p)


class SutraError(RuntimeError):
    """A libsutra call returned a status other than SUTRA_OK."""


class _GenerateParams(C.Structure):
    _fields_ = [
        ("max_tokens", C.c_int32),
        ("stop_strings", C.POINTER(C.c_char_p)),
        ("n_stop_strings", C.c_size_t),
        ("stop_tokens", C.POINTER(C.c_int32)),
        ("n_stop_tokens", C.c_size_t),
        ("add_special_tokens", C.c_bool),
    ]


class Library:
    """The loaded shared library and the calls of the C API."""

    def __init__(self, path):
        self.c = C.CDLL(path)
        c = self.c
        c.sutra_version.restype = C.c_char_p
        c.sutra_last_error.restype = C.c_char_p
        c.sutra_status_name.restype = C.c_char_p
        c.sutra_status_name.argtypes = [C.c_int]
        c.sutra_model_load.argtypes = [C.c_char_p, C.c_void_p, C.POINTER(C.c_void_p)]
        c.sutra_model_free.argtypes = [C.c_void_p]
        c.sutra_model_n_vocab.argtypes = [C.c_void_p]
        c.sutra_session_new.argtypes = [C.c_void_p, C.POINTER(C.c_void_p)]
        c.sutra_session_free.argtypes = [C.c_void_p]
        c.sutra_session_eval.argtypes = [C.c_void_p, C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_float)]
        c.sutra_tokenizer_load.argtypes = [C.c_char_p, C.POINTER(C.c_void_p)]
        c.sutra_tokenizer_free.argtypes = [C.c_void_p]
        c.sutra_tokenize.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t, C.c_bool,
                                     C.POINTER(C.c_int32), C.c_size_t, C.POINTER(C.c_size_t)]
        c.sutra_detokenize.argtypes = [C.c_void_p, C.POINTER(C.c_int32), C.c_size_t,
                                       C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)]
        c.sutra_sampler_new.argtypes = [C.c_uint64, C.POINTER(C.c_void_p)]
        c.sutra_sampler_free.argtypes = [C.c_void_p]
        c.sutra_sampler_add_top_p.argtypes = [C.c_void_p, C.c_float, C.c_size_t]
        c.sutra_sampler_add_temperature.argtypes = [C.c_void_p, C.c_float]
        c.sutra_sampler_add_dist.argtypes = [C.c_void_p]
        c.sutra_generate_default_params.restype = _GenerateParams
        c.sutra_generate.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_char_p, C.c_size_t,
                                     C.POINTER(_GenerateParams), _PIECE_CB, C.c_void_p, C.c_void_p]

    def version(self):
        """The library's semver."""
        return self.c.sutra_version().decode()

    def check(self, status):
        """Raises SutraError unless status is SUTRA_OK (0)."""
        if status != 0:
            name = self.c.sutra_status_name(status).decode()
            raise SutraError(f"{name}: {self.c.sutra_last_error().decode(errors='replace')}")

    def _handle(self, free, h):
        return _Handle(h, free)

    def load_model(self, path):
        """Loads a checkpoint (architecture detected from its tensors)."""
        h = C.c_void_p()
        self.check(self.c.sutra_model_load(path.encode(), None, C.byref(h)))
        return _Handle(h, self.c.sutra_model_free)

    def load_tokenizer(self, path):
        """Loads a tokenizer.json or an RWKV world vocabulary."""
        h = C.c_void_p()
        self.check(self.c.sutra_tokenizer_load(path.encode(), C.byref(h)))
        return _Handle(h, self.c.sutra_tokenizer_free)

    def n_vocab(self, model):
        """Vocabulary size of a model."""
        return self.c.sutra_model_n_vocab(model.h)

    def tokenize(self, tok, text):
        """Token ids of text (no special tokens)."""
        raw = text.encode()
        n = C.c_size_t()
        st = self.c.sutra_tokenize(tok.h, raw, len(raw), False, None, 0, C.byref(n))
        if st not in (0, 5):  # SUTRA_ERR_BUFFER_TOO_SMALL reports the size
            self.check(st)
        ids = (C.c_int32 * max(n.value, 1))()
        self.check(self.c.sutra_tokenize(tok.h, raw, len(raw), False, ids, n.value, C.byref(n)))
        return list(ids[: n.value])

    def detokenize(self, tok, ids):
        """Text of token ids."""
        arr = (C.c_int32 * max(len(ids), 1))(*ids)
        n = C.c_size_t()
        st = self.c.sutra_detokenize(tok.h, arr, len(ids), None, 0, C.byref(n))
        if st not in (0, 5):
            self.check(st)
        buf = C.create_string_buffer(max(n.value, 1))
        self.check(self.c.sutra_detokenize(tok.h, arr, len(ids), buf, n.value, C.byref(n)))
        return buf.raw[: n.value].decode()

    def eval(self, model, ids):
        """Logits after feeding ids to a fresh session."""
        s = C.c_void_p()
        self.check(self.c.sutra_session_new(model.h, C.byref(s)))
        try:
            v = self.n_vocab(model)
            logits = (C.c_float * v)()
            arr = (C.c_int32 * len(ids))(*ids)
            self.check(self.c.sutra_session_eval(s, arr, len(ids), logits))
            return list(logits)
        finally:
            self.c.sutra_session_free(s)

    def generate(self, model, tok, prompt, max_tokens=100, seed=42, top_p=0.9, temperature=0.8):
        """Samples a continuation of prompt; returns the generated text."""
        s, smp = C.c_void_p(), C.c_void_p()
        self.check(self.c.sutra_session_new(model.h, C.byref(s)))
        self.check(self.c.sutra_sampler_new(seed, C.byref(smp)))
        pieces = []

        def on_piece(piece, n, _user):
            pieces.append(C.string_at(piece, n))
            return True

        cb = _PIECE_CB(on_piece)
        try:
            self.check(self.c.sutra_sampler_add_top_p(smp, top_p, 1))
            self.check(self.c.sutra_sampler_add_temperature(smp, temperature))
            self.check(self.c.sutra_sampler_add_dist(smp))
            p = self.c.sutra_generate_default_params()
            p.max_tokens = max_tokens
            raw = prompt.encode()
            self.check(self.c.sutra_generate(s, tok.h, smp, raw, len(raw), C.byref(p), cb, None, None))
        finally:
            self.c.sutra_sampler_free(smp)
            self.c.sutra_session_free(s)
        return b"".join(pieces).decode()


class _Handle:
    """An owned libsutra handle, released by its _free function."""

    def __init__(self, h, free):
        self.h, self._free = h, free

    def __del__(self):
        if self.h:
            self._free(self.h)
            self.h = None
