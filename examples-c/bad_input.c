/* bad_input: throws a hand-made set of bad inputs at every exported sutra_* function and
 * checks the contract of docs/c-api.md for each: the exact status, a non-empty
 * sutra_last_error() naming the argument or file at fault, out-parameters written only on
 * success, and objects the caller owns unchanged and still usable afterwards.
 *
 *   bad_input RWKV7 RWKV4 MAMBA1 LORA_RWKV7 LORA_MAMBA1 TOKENIZER
 *
 * RWKV7, RWKV4, MAMBA1: small checkpoints (tests/fixtures/golden/<arch>/model.safetensors);
 * LORA_*: PEFT adapter folders for RWKV7 and MAMBA1 (tests/fixtures/golden/lora/<arch>);
 * TOKENIZER: a tokenizer.json whose byte tokens fit RWKV7's vocabulary of 256
 * (models/rwkv7-shakespeare-6x256/tokenizer.json). Broken files are written into a
 * temporary folder that is removed at the end.
 *
 * Prints one line per case ("ok", "FAIL", "known", "FIXED", "skip") and a summary; exits
 * non-zero on any FAIL. Cases listed in KNOWN_BUGS are library bugs reported but not yet
 * fixed: they are run and printed as "known" without failing, and a known case that passes
 * is a failure ("FIXED": remove it from the list). Cases in KNOWN_CRASHES would kill or hang
 * the process: they are skipped unless SUTRA_BAD_INPUT_CRASHY is 1 (all of them) or the label
 * of one; each is then killed by SIGALRM after 5 s (run it under `ulimit -v` so that a case
 * reading an endless file fails fast instead of filling the memory).
 * Uses only the C API of libsutra (include/sutra.h). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sutra.h"

/* Library bugs found by this program, by case label; see the report of issue #13. */
static const char *const KNOWN_BUGS[] = {
    NULL,
};
/* Cases that crash the process (abort, segfault): skipped unless SUTRA_BAD_INPUT_CRASHY=1. */
static const char *const KNOWN_CRASHES[] = {
    NULL,
};

static int n_ok, n_fail, n_known, n_skip;

static int listed(const char *const *list, const char *label) {
    for (size_t i = 0; list[i]; i++)
        if (strcmp(list[i], label) == 0) return 1;
    return 0;
}

/* Reports one case: `ok` is whether it behaved as the contract says. */
/* `info` (may be NULL) is printed after a case that behaves. */
static void report(const char *label, int ok, const char *detail, const char *info) {
    int known = listed(KNOWN_BUGS, label);
    if (ok && !known) {
        n_ok++;
        printf("ok     %s%s%s\n", label, info ? ": " : "", info ? info : "");
    } else if (ok) {
        n_fail++;
        printf("FIXED  %s: passes now; remove it from KNOWN_BUGS\n", label);
    } else if (known) {
        n_known++;
        printf("known  %s: %s\n", label, detail);
    } else {
        n_fail++;
        printf("FAIL   %s: %s\n", label, detail);
    }
    fflush(stdout);
}

/* Whether a case that may crash the process runs; prints "skip" otherwise. */
static int may_run(const char *label) {
    if (!listed(KNOWN_CRASHES, label)) return 1;
    const char *all = getenv("SUTRA_BAD_INPUT_CRASHY");
    if (all && (strcmp(all, "1") == 0 || strcmp(all, label) == 0)) {
        /* A case that hangs (reading an endless file) is killed by SIGALRM. */
        printf("run    %s (known to crash or hang; killed after 5 s)\n", label);
        fflush(stdout);
        alarm(5);
        return 1;
    }
    n_skip++;
    printf("skip   %s: crashes or hangs the process (known; SUTRA_BAD_INPUT_CRASHY=1 runs it)\n", label);
    return 0;
}

static void copy_error(char *dst, size_t cap) {
    const char *e = sutra_last_error();
    snprintf(dst, cap, "%s", e ? e : "(NULL)");
}

/* The check of one call: status `got` (message `msg`, copied right after the call) against
 * `want`; on an error, the message must be non-empty and contain `needle` (when not NULL);
 * `post` is the caller's check of the objects and out-parameters after the call. */
static void check_call(const char *label, const char *call, sutra_status got, const char *msg, sutra_status want,
                       const char *needle, int post, const char *post_text) {
    char detail[3072];
    int ok = 1;
    if (got != want) {
        ok = 0;
        snprintf(detail, sizeof detail, "%s returned %s, expected %s (message: \"%s\")", call, sutra_status_name(got),
                 sutra_status_name(want), msg);
    } else if (want != SUTRA_OK && msg[0] == '\0') {
        ok = 0;
        snprintf(detail, sizeof detail, "%s returned %s with an empty sutra_last_error()", call,
                 sutra_status_name(got));
    } else if (want != SUTRA_OK && needle && !strstr(msg, needle)) {
        ok = 0;
        snprintf(detail, sizeof detail, "%s: message \"%s\" does not contain \"%s\"", call, msg, needle);
    } else if (!post) {
        ok = 0;
        snprintf(detail, sizeof detail, "%s returned %s, but afterwards this does not hold: %s (message: \"%s\")",
                 call, sutra_status_name(got), post_text, msg);
    }
    char info[2200];
    if (got == SUTRA_OK)
        snprintf(info, sizeof info, "SUTRA_OK");
    else
        snprintf(info, sizeof info, "%s \"%s\"", sutra_status_name(got), msg);
    report(label, ok, detail, info);
}

#define CASE_POST(label, want, needle, call, post)                                 \
    do {                                                                           \
        if (may_run(label)) {                                                      \
            sutra_status st_ = (call);                                             \
            char msg_[2048];                                                       \
            copy_error(msg_, sizeof msg_);                                         \
            int post_ = (post);                                                    \
            check_call(label, #call, st_, msg_, want, needle, post_, #post);       \
            alarm(0);                                                              \
        }                                                                          \
    } while (0)
#define CASE(label, want, needle, call) CASE_POST(label, want, needle, call, 1)

/* A plain condition as one case. */
static void check(const char *label, int cond, const char *what) {
    char detail[1024];
    snprintf(detail, sizeof detail, "does not hold: %s (last error: \"%s\")", what, sutra_last_error());
    report(label, cond, detail, NULL);
}
#define CHECK(label, cond) check(label, (cond), #cond)

/* --- files -------------------------------------------------------------------------------- */

static char tmp_root[512];
static char created[64][640]; /* everything made under tmp_root, removed in reverse order */
static int n_created;

/* `name` under the temporary folder (each call has its own string, valid to the end). */
static const char *tmp_path(const char *name) {
    static char bufs[128][640];
    static int next;
    if (next == 128) {
        fprintf(stderr, "bad_input: too many temporary paths\n");
        exit(2);
    }
    char *p = bufs[next++];
    snprintf(p, 640, "%s/%s", tmp_root, name);
    return p;
}

static void remember(const char *path) {
    for (int i = 0; i < n_created; i++)
        if (strcmp(created[i], path) == 0) return;
    if (n_created < 64) snprintf(created[n_created++], 640, "%s", path);
}

static const char *write_tmp(const char *name, const void *data, size_t len) {
    const char *p = tmp_path(name);
    FILE *f = fopen(p, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        fprintf(stderr, "cannot write %s\n", p);
        exit(2);
    }
    fclose(f);
    remember(p);
    return p;
}

static const char *mkdir_tmp(const char *name) {
    const char *p = tmp_path(name);
    if (mkdir(p, 0700) != 0) {
        fprintf(stderr, "cannot create %s\n", p);
        exit(2);
    }
    remember(p);
    return p;
}

/* A safetensors file of `header` (JSON) over 64 zero bytes of data. */
static const char *write_st(const char *name, const char *header) {
    unsigned char buf[1024];
    size_t hlen = strlen(header);
    if (hlen + 72 > sizeof buf) exit(2);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    memset(buf + 8 + hlen, 0, 64);
    return write_tmp(name, buf, 8 + hlen + 64);
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void cleanup_tmp(void) {
    for (int i = n_created - 1; i >= 0; i--) remove(created[i]);
    if (tmp_root[0]) rmdir(tmp_root);
}

/* --- helpers over sessions ------------------------------------------------------------------ */

static int32_t n_vocab;

/* The logits after token 7 on a clone of `s` (s itself is not advanced). */
static int probe(const sutra_session *s, float *out) {
    sutra_session *c = NULL;
    int32_t t = 7;
    if (sutra_session_clone(s, &c) != SUTRA_OK) return 0;
    int ok = sutra_session_eval(c, &t, 1, out) == SUTRA_OK;
    sutra_session_free(c);
    return ok;
}

/* The state blob of `s`, malloc'd (*len bytes). */
static unsigned char *blob_of(const sutra_session *s, size_t *len) {
    if (sutra_session_state_size(s, len) != SUTRA_OK) return NULL;
    unsigned char *b = malloc(*len);
    if (b && sutra_session_state_save(s, b, *len) != SUTRA_OK) {
        free(b);
        return NULL;
    }
    return b;
}

/* Whether `s` has the state blob `want` and gives the logits `want_logits` on the probe. */
static int same_session(const sutra_session *s, const unsigned char *want, size_t want_len, const float *want_logits) {
    size_t len = 0;
    unsigned char *b = blob_of(s, &len);
    float *l = malloc((size_t)n_vocab * sizeof *l);
    int ok = b && l && len == want_len && memcmp(b, want, len) == 0 && probe(s, l) &&
             memcmp(l, want_logits, (size_t)n_vocab * sizeof *l) == 0;
    free(b);
    free(l);
    return ok;
}

/* Equal to float rounding (a batch and separate evals may round differently). */
static int close_to(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float d = a[i] - b[i], m = b[i] < 0 ? -b[i] : b[i];
        if (d < 0) d = -d;
        if (!(d <= 1e-4f + 1e-4f * m)) return 0;
    }
    return 1;
}

static bool cancel_progress(float fraction, void *user_data) {
    (void)fraction;
    (*(int *)user_data)++;
    return false;
}

static bool count_piece(const char *piece, size_t len, void *user_data) {
    (void)piece;
    *(size_t *)user_data += len;
    return true;
}

static int sentinel_object;
#define SENTINEL ((void *)&sentinel_object)

/* --- the cases ---------------------------------------------------------------------------- */

static void basics(void) {
    CHECK("sutra_last_error() is \"\" before any failure", strcmp(sutra_last_error(), "") == 0);
    CHECK("sutra_version() is SUTRA_VERSION", strcmp(sutra_version(), SUTRA_VERSION) == 0);
    CHECK("sutra_system_info() is a non-empty line", sutra_system_info() && sutra_system_info()[0]);
    CHECK("sutra_status_name(42)", strcmp(sutra_status_name(42), "SUTRA_UNKNOWN_STATUS") == 0);
    CHECK("sutra_status_name(-1)", strcmp(sutra_status_name(-1), "SUTRA_UNKNOWN_STATUS") == 0);
    CHECK("sutra_status_name(INT32_MIN)", strcmp(sutra_status_name(INT32_MIN), "SUTRA_UNKNOWN_STATUS") == 0);
    CHECK("sutra_status_name(INT32_MAX)", strcmp(sutra_status_name(INT32_MAX), "SUTRA_UNKNOWN_STATUS") == 0);
    CHECK("sutra_status_name(SUTRA_ERR_INTERNAL)",
          strcmp(sutra_status_name(SUTRA_ERR_INTERNAL), "SUTRA_ERR_INTERNAL") == 0);
    sutra_model_free(NULL);
    sutra_session_free(NULL);
    sutra_tokenizer_free(NULL);
    sutra_sampler_free(NULL);
    sutra_adapter_free(NULL);
    sutra_trainer_free(NULL);
    CHECK("every sutra_*_free(NULL) is a no-op", 1);
}

static void model_loading(const char *model_path) {
    sutra_model *m = SENTINEL;
    sutra_model_params p = sutra_model_default_params();
    const char *missing = tmp_path("no-such-model.safetensors");

    CASE_POST("model_load: NULL path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_model_load(NULL, NULL, &m),
              m == SENTINEL);
    CASE("model_load: NULL out_model", SUTRA_ERR_INVALID_ARGUMENT, "out_model", sutra_model_load(model_path, NULL, NULL));
    CASE_POST("model_load: missing file", SUTRA_ERR_IO, missing, sutra_model_load(missing, NULL, &m), m == SENTINEL);
    CASE_POST("model_load: a folder", SUTRA_ERR_IO, tmp_root, sutra_model_load(tmp_root, NULL, &m), m == SENTINEL);

    const char *empty = write_tmp("empty.safetensors", "", 0);
    CASE_POST("model_load: empty file", SUTRA_ERR_FORMAT, empty, sutra_model_load(empty, NULL, &m), m == SENTINEL);
    const char *text = "this is not a safetensors file, just some text that goes on for a while\n";
    const char *garbage = write_tmp("garbage.safetensors", text, strlen(text));
    CASE_POST("model_load: garbage file", SUTRA_ERR_FORMAT, garbage, sutra_model_load(garbage, NULL, &m),
              m == SENTINEL);
    unsigned char huge[16];
    memset(huge, 0xff, sizeof huge);
    const char *hugehdr = write_tmp("huge-header.safetensors", huge, sizeof huge);
    CASE_POST("model_load: header length 2^64-1", SUTRA_ERR_FORMAT, hugehdr, sutra_model_load(hugehdr, NULL, &m),
              m == SENTINEL);
    /* A well-formed header whose tensor lies past the end of the file. */
    const char *hdr = "{\"emb.weight\":{\"dtype\":\"F32\",\"shape\":[256,128],\"data_offsets\":[0,131072]}}";
    unsigned char past[256];
    uint64_t hlen = strlen(hdr);
    for (int i = 0; i < 8; i++) past[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(past + 8, hdr, hlen);
    const char *beyond = write_tmp("beyond-eof.safetensors", past, 8 + hlen);
    CASE_POST("model_load: tensor data past the end of the file", SUTRA_ERR_FORMAT, "emb.weight",
              sutra_model_load(beyond, NULL, &m), m == SENTINEL);
    /* A valid safetensors file that is no model libsutra knows. */
    const char *other = "{\"encoder.layer.0.q.weight\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    unsigned char obuf[256];
    hlen = strlen(other);
    for (int i = 0; i < 8; i++) obuf[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(obuf + 8, other, hlen);
    memset(obuf + 8 + hlen, 0, 16);
    const char *unknown = write_tmp("unknown-arch.safetensors", obuf, 8 + hlen + 16);
    CASE_POST("model_load: unknown architecture", SUTRA_ERR_UNSUPPORTED, "encoder.layer.0.q.weight",
              sutra_model_load(unknown, NULL, &m), m == SENTINEL);

    static const struct {
        const char *label, *file, *header, *needle;
        sutra_status want;
    } headers[] = {
        {"model_load: data_offsets reversed", "reversed.safetensors",
         "{\"emb.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[64,0]}}", "emb.weight",
         SUTRA_ERR_FORMAT},
        {"model_load: data_offsets shorter than the shape", "short.safetensors",
         "{\"emb.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,60]}}", "emb.weight",
         SUTRA_ERR_FORMAT},
        {"model_load: shape whose byte size overflows to 0", "overflow.safetensors",
         "{\"emb.weight\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}",
         "emb.weight", SUTRA_ERR_FORMAT},
        {"model_load: negative dimension", "negative.safetensors",
         "{\"emb.weight\":{\"dtype\":\"F32\",\"shape\":[-4,4],\"data_offsets\":[0,64]}}", "emb.weight",
         SUTRA_ERR_FORMAT},
        {"model_load: dtype F99", "f99.safetensors",
         "{\"emb.weight\":{\"dtype\":\"F99\",\"shape\":[4,4],\"data_offsets\":[0,64]}}", "F99",
         SUTRA_ERR_UNSUPPORTED},
        {"model_load: overlapping tensors", "overlap.safetensors",
         "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,64]},"
         "\"b.weight\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,64]}}",
         "overlap", SUTRA_ERR_FORMAT},
        {"model_load: header is a JSON array", "array.safetensors", "[1,2,3]", "array.safetensors", SUTRA_ERR_FORMAT},
        {"model_load: header not UTF-8", "latin1.safetensors", "{\"\xe9\":1}", "UTF-8", SUTRA_ERR_FORMAT},
        {"model_load: no tensors", "no-tensors.safetensors", "{}", "0 tensors", SUTRA_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        const char *f = write_st(headers[i].file, headers[i].header);
        CASE_POST(headers[i].label, headers[i].want, headers[i].needle, sutra_model_load(f, NULL, &m), m == SENTINEL);
    }
    CASE_POST("model_load: empty path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_model_load("", NULL, &m), m == SENTINEL);
    CASE_POST("model_load: /dev/zero", SUTRA_ERR_IO, "/dev/zero", sutra_model_load("/dev/zero", NULL, &m),
              m == SENTINEL);
    p.use_mmap = false;
    CASE_POST("model_load: /dev/zero, use_mmap false", SUTRA_ERR_IO, "/dev/zero",
              sutra_model_load("/dev/zero", &p, &m), m == SENTINEL);
    p.use_mmap = true;

    size_t len = 0;
    unsigned char *bytes = read_all(model_path, &len);
    /* The last weight of the file made NaN: check_finite names the tensor and index. */
    unsigned char *poisoned = malloc(len);
    memcpy(poisoned, bytes, len);
    const unsigned char qnan[4] = {0x00, 0x00, 0xc0, 0x7f};
    memcpy(poisoned + len - 4, qnan, 4);
    const char *nanfile = write_tmp("nan-weight.safetensors", poisoned, len);
    free(poisoned);
    p.check_finite = true;
    CASE_POST("model_load: a NaN weight, check_finite", SUTRA_ERR_FORMAT, "index", sutra_model_load(nanfile, &p, &m),
              m == SENTINEL);
    p.check_finite = false;
    const char *half = write_tmp("truncated.safetensors", bytes, len / 2);
    CASE_POST("model_load: truncated to half", SUTRA_ERR_FORMAT, half, sutra_model_load(half, NULL, &m),
              m == SENTINEL);
    p.use_mmap = false;
    CASE_POST("model_load: truncated to half, use_mmap false", SUTRA_ERR_FORMAT, half, sutra_model_load(half, &p, &m),
              m == SENTINEL);
    const char *seven = write_tmp("seven-bytes.safetensors", bytes, 7);
    CASE_POST("model_load: truncated to 7 bytes", SUTRA_ERR_FORMAT, seven, sutra_model_load(seven, NULL, &m),
              m == SENTINEL);

    p = sutra_model_default_params();
    p.n_threads = -1;
    CASE_POST("model_load: n_threads -1", SUTRA_ERR_INVALID_ARGUMENT, "n_threads", sutra_model_load(model_path, &p, &m),
              m == SENTINEL);
    p.n_threads = INT32_MIN;
    CASE_POST("model_load: n_threads INT32_MIN", SUTRA_ERR_INVALID_ARGUMENT, "n_threads",
              sutra_model_load(model_path, &p, &m), m == SENTINEL);
    p.n_threads = INT32_MAX;
    CASE_POST("model_load: n_threads INT32_MAX", SUTRA_ERR_INVALID_ARGUMENT, "n_threads",
              sutra_model_load(model_path, &p, &m), m == SENTINEL);
    p.n_threads = 1000000;
    CASE_POST("model_load: n_threads 1000000", SUTRA_ERR_INVALID_ARGUMENT, "n_threads",
              sutra_model_load(model_path, &p, &m), m == SENTINEL);
    int calls = 0;
    p = sutra_model_default_params();
    p.progress_callback = cancel_progress;
    p.progress_user_data = &calls;
    CASE_POST("model_load: progress callback cancels", SUTRA_ERR_CANCELLED, "cancel",
              sutra_model_load(model_path, &p, &m), m == SENTINEL && calls >= 1);
    calls = 0;
    CASE_POST("model_load_from_memory: progress callback cancels", SUTRA_ERR_CANCELLED, "cancel",
              sutra_model_load_from_memory(bytes, len, &p, &m), m == SENTINEL && calls >= 1);

    CASE_POST("model_load_from_memory: NULL data", SUTRA_ERR_INVALID_ARGUMENT, "data",
              sutra_model_load_from_memory(NULL, len, NULL, &m), m == SENTINEL);
    CASE("model_load_from_memory: NULL out_model", SUTRA_ERR_INVALID_ARGUMENT, "out_model",
         sutra_model_load_from_memory(bytes, len, NULL, NULL));
    CASE_POST("model_load_from_memory: len 0", SUTRA_ERR_INVALID_ARGUMENT, NULL,
              sutra_model_load_from_memory(bytes, 0, NULL, &m), m == SENTINEL);
    CASE_POST("model_load_from_memory: garbage", SUTRA_ERR_FORMAT, NULL,
              sutra_model_load_from_memory((const uint8_t *)text, strlen(text), NULL, &m), m == SENTINEL);
    CASE_POST("model_load_from_memory: truncated to half", SUTRA_ERR_FORMAT, NULL,
              sutra_model_load_from_memory(bytes, len / 2, NULL, &m), m == SENTINEL);
    CASE_POST("model_load_from_memory: header length 2^64-1", SUTRA_ERR_FORMAT, NULL,
              sutra_model_load_from_memory(huge, sizeof huge, NULL, &m), m == SENTINEL);
    p = sutra_model_default_params();
    p.n_threads = -5;
    CASE_POST("model_load_from_memory: n_threads -5", SUTRA_ERR_INVALID_ARGUMENT, "n_threads",
              sutra_model_load_from_memory(bytes, len, &p, &m), m == SENTINEL);
    free(bytes);

    CHECK("model_n_vocab(NULL) is -1", sutra_model_n_vocab(NULL) == -1);
    sutra_model_info info;
    CASE("model_get_info: NULL model", SUTRA_ERR_INVALID_ARGUMENT, "model", sutra_model_get_info(NULL, &info));
}

static void sessions(sutra_model *m, sutra_model *mamba) {
    sutra_session *s = NULL, *out = SENTINEL;
    sutra_model_info info;
    CASE("model_get_info: NULL out_info", SUTRA_ERR_INVALID_ARGUMENT, "out_info", sutra_model_get_info(m, NULL));
    CASE_POST("session_new: NULL model", SUTRA_ERR_INVALID_ARGUMENT, "model", sutra_session_new(NULL, &out),
              out == SENTINEL);
    CASE("session_new: NULL out_session", SUTRA_ERR_INVALID_ARGUMENT, "out_session", sutra_session_new(m, NULL));
    if (sutra_model_get_info(m, &info) != SUTRA_OK || sutra_session_new(m, &s) != SUTRA_OK) {
        check("session setup", 0, "sutra_session_new on the RWKV-7 model");
        return;
    }
    int32_t prompt[] = {1, 2, 3};
    float *logits = malloc((size_t)n_vocab * sizeof *logits);
    float *ref = malloc((size_t)n_vocab * sizeof *ref);
    CHECK("session setup: eval {1, 2, 3}", sutra_session_eval(s, prompt, 3, logits) == SUTRA_OK);
    size_t blen = 0;
    unsigned char *blob = blob_of(s, &blen);
    CHECK("session setup: probe", blob && probe(s, ref));
    if (!blob) return;
#define SAME same_session(s, blob, blen, ref)

    int32_t at_vocab = n_vocab, neg = -1, imax = INT32_MAX, imin = INT32_MIN;
    int32_t mixed[] = {5, 300, 7};
    char vbuf[32];
    snprintf(vbuf, sizeof vbuf, "%d", (int)n_vocab);
    CASE_POST("session_eval: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_session_eval(NULL, prompt, 3, logits), SAME);
    CASE_POST("session_eval: NULL tokens", SUTRA_ERR_INVALID_ARGUMENT, "tokens", sutra_session_eval(s, NULL, 3, logits),
              SAME);
    CASE_POST("session_eval: n_tokens 0", SUTRA_ERR_INVALID_ARGUMENT, "n_tokens",
              sutra_session_eval(s, prompt, 0, logits), SAME);
    CASE_POST("session_eval: token id = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, vbuf,
              sutra_session_eval(s, &at_vocab, 1, logits), SAME);
    CASE_POST("session_eval: token id -1", SUTRA_ERR_INVALID_ARGUMENT, "-1", sutra_session_eval(s, &neg, 1, logits),
              SAME);
    CASE_POST("session_eval: token id INT32_MAX", SUTRA_ERR_INVALID_ARGUMENT, "2147483647",
              sutra_session_eval(s, &imax, 1, NULL), SAME);
    CASE_POST("session_eval: token id INT32_MIN", SUTRA_ERR_INVALID_ARGUMENT, "-2147483648",
              sutra_session_eval(s, &imin, 1, NULL), SAME);
    CASE_POST("session_eval: {5, 300, 7} names position 1", SUTRA_ERR_INVALID_ARGUMENT, "position 1",
              sutra_session_eval(s, mixed, 3, logits), SAME);
    CASE_POST("session_eval_stepwise: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_session_eval_stepwise(NULL, prompt, 3, logits), SAME);
    CASE_POST("session_eval_stepwise: NULL tokens", SUTRA_ERR_INVALID_ARGUMENT, "tokens",
              sutra_session_eval_stepwise(s, NULL, 1, logits), SAME);
    CASE_POST("session_eval_stepwise: n_tokens 0", SUTRA_ERR_INVALID_ARGUMENT, "n_tokens",
              sutra_session_eval_stepwise(s, prompt, 0, logits), SAME);
    CASE_POST("session_eval_stepwise: {5, 300, 7} names position 1", SUTRA_ERR_INVALID_ARGUMENT, "position 1",
              sutra_session_eval_stepwise(s, mixed, 3, logits), SAME);
    CASE_POST("session_eval_stepwise: token id -1", SUTRA_ERR_INVALID_ARGUMENT, "-1",
              sutra_session_eval_stepwise(s, &neg, 1, logits), SAME);

    CASE("session_reset: NULL", SUTRA_ERR_INVALID_ARGUMENT, "session", sutra_session_reset(NULL));
    CASE_POST("session_clone: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session", sutra_session_clone(NULL, &out),
              out == SENTINEL);
    CASE("session_clone: NULL out_session", SUTRA_ERR_INVALID_ARGUMENT, "out_session", sutra_session_clone(s, NULL));

    size_t n = 12345;
    CASE_POST("session_state_size: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_session_state_size(NULL, &n), n == 12345);
    CASE("session_state_size: NULL out_bytes", SUTRA_ERR_INVALID_ARGUMENT, "out_bytes",
         sutra_session_state_size(s, NULL));
    unsigned char *buf = malloc(blen + 16);
    char need[32];
    snprintf(need, sizeof need, "%zu", blen);
    CASE("session_state_save: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
         sutra_session_state_save(NULL, buf, blen));
    CASE("session_state_save: NULL buf", SUTRA_ERR_INVALID_ARGUMENT, "buf", sutra_session_state_save(s, NULL, blen));
    memset(buf, 0xAB, blen + 16);
    CASE_POST("session_state_save: buffer one byte short", SUTRA_ERR_BUFFER_TOO_SMALL, need,
              sutra_session_state_save(s, buf, blen - 1), buf[0] == 0xAB && buf[blen - 2] == 0xAB);
    CASE("session_state_save: buf_len 0", SUTRA_ERR_BUFFER_TOO_SMALL, need, sutra_session_state_save(s, buf, 0));
    CASE_POST("session_state_save: larger buffer", SUTRA_OK, NULL, sutra_session_state_save(s, buf, blen + 16),
              memcmp(buf, blob, blen) == 0);

    /* Corrupted blobs: the session must stay exactly as it was. */
    CASE_POST("session_state_load: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_session_state_load(NULL, blob, blen), SAME);
    CASE_POST("session_state_load: NULL buf", SUTRA_ERR_INVALID_ARGUMENT, "buf", sutra_session_state_load(s, NULL, blen),
              SAME);
    CASE_POST("session_state_load: buf_len 0", SUTRA_ERR_FORMAT, "state", sutra_session_state_load(s, blob, 0), SAME);
    CASE_POST("session_state_load: 10 bytes", SUTRA_ERR_FORMAT, "state", sutra_session_state_load(s, blob, 10), SAME);
    CASE_POST("session_state_load: truncated to half", SUTRA_ERR_FORMAT, "state",
              sutra_session_state_load(s, blob, blen / 2), SAME);
    CASE_POST("session_state_load: one byte short", SUTRA_ERR_FORMAT, "state",
              sutra_session_state_load(s, blob, blen - 1), SAME);
    memcpy(buf, blob, blen);
    buf[blen] = 0;
    CASE_POST("session_state_load: one byte of padding", SUTRA_ERR_FORMAT, "state",
              sutra_session_state_load(s, buf, blen + 1), SAME);
    static const struct {
        const char *label;
        size_t at; /* from the start, or from the end when >= 1000 (1000 = the last byte) */
        unsigned char mask;
        const char *needle;
    } flips[] = {
        {"session_state_load: bit flip in the magic", 0, 0x01, "magic"},
        {"session_state_load: bit flip in the version", 8, 0x02, "version"},
        {"session_state_load: bit flip in the reserved word", 12, 0x80, "checksum"},
        {"session_state_load: bit flip in the fingerprint", 16, 0x10, "another shape"},
        {"session_state_load: bit flip in the value count", 24, 0x04, "values"},
        {"session_state_load: bit flip in the first value", 32, 0x01, "checksum"},
        {"session_state_load: sign flip of a value in the middle", 1, 0x80, "checksum"},
        {"session_state_load: bit flip in the checksum", 1000, 0x01, "checksum"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(buf, blob, blen);
        size_t at = flips[i].at;
        if (at == 1) at = 32 + ((blen - 40) / 8) * 4 + 3; /* the top byte of a value in the middle */
        if (at >= 1000) at = blen - 1 - (at - 1000);
        buf[at] ^= flips[i].mask;
        CASE_POST(flips[i].label, SUTRA_ERR_FORMAT, flips[i].needle, sutra_session_state_load(s, buf, blen), SAME);
    }
    sutra_session *ms = NULL;
    size_t mlen = 0;
    unsigned char *mblob = NULL;
    if (sutra_session_new(mamba, &ms) == SUTRA_OK && sutra_session_eval(ms, prompt, 3, NULL) == SUTRA_OK)
        mblob = blob_of(ms, &mlen);
    if (mblob) {
        CASE_POST("session_state_load: blob of a Mamba-1 session", SUTRA_ERR_FORMAT, "another shape",
                  sutra_session_state_load(s, mblob, mlen), SAME);
        /* The same blob with its fingerprint replaced by the RWKV-7 one: the sizes disagree. */
        unsigned char *forged = malloc(mlen);
        memcpy(forged, mblob, mlen);
        memcpy(forged + 16, blob + 16, 8);
        CASE_POST("session_state_load: Mamba-1 blob with the RWKV-7 fingerprint", SUTRA_ERR_FORMAT, "state",
                  sutra_session_state_load(s, forged, mlen), SAME);
        free(forged);
    }
    sutra_session *fresh = NULL;
    if (sutra_session_new(m, &fresh) == SUTRA_OK) {
        CASE_POST("session_state_load: the good blob into a fresh session", SUTRA_OK, NULL,
                  sutra_session_state_load(fresh, blob, blen), same_session(fresh, blob, blen, ref));
        sutra_session_free(fresh);
    }

    /* Batches: on error no session changes. */
    sutra_session *t = NULL;
    sutra_session_clone(s, &t);
    const int32_t one[] = {9}, bad[] = {4, n_vocab}, negs[] = {4, -2};
    const int32_t *toks[] = {one, one};
    size_t ns[] = {1, 1};
    sutra_session *pair[] = {s, t};
    sutra_session *dup[] = {s, s};
    float *two = malloc(2 * (size_t)n_vocab * sizeof *two);
#define BOTH (SAME && same_session(t, blob, blen, ref))
    CASE_POST("batch_eval: NULL sessions", SUTRA_ERR_INVALID_ARGUMENT, "sessions",
              sutra_batch_eval(NULL, 2, toks, ns, two), BOTH);
    CASE_POST("batch_eval: NULL tokens", SUTRA_ERR_INVALID_ARGUMENT, "tokens", sutra_batch_eval(pair, 2, NULL, ns, two),
              BOTH);
    CASE_POST("batch_eval: NULL n_tokens", SUTRA_ERR_INVALID_ARGUMENT, "n_tokens",
              sutra_batch_eval(pair, 2, toks, NULL, two), BOTH);
    CASE_POST("batch_eval: the same session twice", SUTRA_ERR_INVALID_ARGUMENT, "distinct",
              sutra_batch_eval(dup, 2, toks, ns, two), BOTH);
    sutra_session *with_null[] = {s, NULL};
    CASE_POST("batch_eval: sessions[1] NULL", SUTRA_ERR_INVALID_ARGUMENT, "sessions[1]",
              sutra_batch_eval(with_null, 2, toks, ns, two), BOTH);
    const int32_t *null_toks[] = {one, NULL};
    CASE_POST("batch_eval: tokens[1] NULL", SUTRA_ERR_INVALID_ARGUMENT, "tokens[1]",
              sutra_batch_eval(pair, 2, null_toks, ns, two), BOTH);
    size_t zero[] = {1, 0};
    CASE_POST("batch_eval: n_tokens[1] 0", SUTRA_ERR_INVALID_ARGUMENT, "sessions[1]",
              sutra_batch_eval(pair, 2, toks, zero, two), BOTH);
    const int32_t *bad_toks[] = {one, bad};
    size_t ns2[] = {1, 2};
    CASE_POST("batch_eval: tokens[1][1] = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, "sessions[1]",
              sutra_batch_eval(pair, 2, bad_toks, ns2, two), BOTH);
    const int32_t *neg_toks[] = {one, negs};
    CASE_POST("batch_eval: tokens[1][1] = -2", SUTRA_ERR_INVALID_ARGUMENT, "tokens[1]",
              sutra_batch_eval(pair, 2, neg_toks, ns2, two), BOTH);
    if (ms) {
        sutra_session *mixed_models[] = {s, ms};
        CASE_POST("batch_eval: sessions of two models", SUTRA_ERR_INVALID_ARGUMENT, "another model",
                  sutra_batch_eval(mixed_models, 2, toks, ns, two), SAME);
    }
    CASE_POST("batch_eval: n_sessions 0", SUTRA_OK, NULL, sutra_batch_eval(pair, 0, toks, ns, NULL), BOTH);
    /* And the objects still work: a batch of the two equals two separate evals. */
    CASE_POST("batch_eval: a good batch after the bad ones", SUTRA_OK, NULL, sutra_batch_eval(pair, 2, toks, ns, two),
              1);
    sutra_session_state_load(s, blob, blen);
    CHECK("session still evaluates after the bad calls, as in the batch",
          sutra_session_eval(s, one, 1, logits) == SUTRA_OK && close_to(logits, two, (size_t)n_vocab));
#undef BOTH
#undef SAME
    free(two);
    sutra_session_free(t);
    sutra_session_free(ms);
    free(mblob);
    free(buf);
    free(blob);
    free(ref);
    free(logits);
    sutra_session_free(s);
}

static void tokenizers(const char *tok_path, sutra_tokenizer **out) {
    sutra_tokenizer *t = SENTINEL;
    const char *missing = tmp_path("no-such-tokenizer.json");
    CASE_POST("tokenizer_load: NULL path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_tokenizer_load(NULL, &t),
              t == SENTINEL);
    CASE("tokenizer_load: NULL out_tokenizer", SUTRA_ERR_INVALID_ARGUMENT, "out_tokenizer",
         sutra_tokenizer_load(tok_path, NULL));
    CASE_POST("tokenizer_load: missing file", SUTRA_ERR_IO, missing, sutra_tokenizer_load(missing, &t), t == SENTINEL);
    CASE_POST("tokenizer_load: a folder", SUTRA_ERR_IO, tmp_root, sutra_tokenizer_load(tmp_root, &t), t == SENTINEL);
    const char *empty = write_tmp("empty-tokenizer.json", "", 0);
    CASE_POST("tokenizer_load: empty file", SUTRA_ERR_FORMAT, empty, sutra_tokenizer_load(empty, &t), t == SENTINEL);
    const char *g = "\x01\x02garbage{{{";
    const char *garbage = write_tmp("garbage-tokenizer.json", g, strlen(g));
    CASE_POST("tokenizer_load: garbage file", SUTRA_ERR_FORMAT, garbage, sutra_tokenizer_load(garbage, &t),
              t == SENTINEL);
    size_t len = 0;
    unsigned char *bytes = read_all(tok_path, &len);
    const char *half = write_tmp("truncated-tokenizer.json", bytes, len / 2);
    CASE_POST("tokenizer_load: truncated to half", SUTRA_ERR_FORMAT, half, sutra_tokenizer_load(half, &t),
              t == SENTINEL);
    free(bytes);
    const char *ej = "{}";
    const char *emptyobj = write_tmp("empty-object-tokenizer.json", ej, strlen(ej));
    CASE_POST("tokenizer_load: {}", SUTRA_ERR_FORMAT, emptyobj, sutra_tokenizer_load(emptyobj, &t), t == SENTINEL);
    const char *nm = "{\"model\":{\"type\":\"NoSuchModel\",\"vocab\":{}}}";
    const char *nomodel = write_tmp("unknown-model-tokenizer.json", nm, strlen(nm));
    CASE_POST("tokenizer_load: model type NoSuchModel", SUTRA_ERR_UNSUPPORTED, "NoSuchModel",
              sutra_tokenizer_load(nomodel, &t), t == SENTINEL);
    const char *wv = "1 'a' 1\nnot a vocabulary line\n";
    const char *world = write_tmp("rwkv_vocab_v20230424.txt", wv, strlen(wv));
    CASE_POST("tokenizer_load: bad world vocabulary line", SUTRA_ERR_FORMAT, "line 2",
              sutra_tokenizer_load(world, &t), t == SENTINEL);

    const char *bu = "{\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    const char *bpe_unk = write_tmp("bpe-without-unk.json", bu, strlen(bu));
    CASE_POST("tokenizer_load: BPE whose unk_token is not in the vocabulary", SUTRA_ERR_FORMAT, "<unk>",
              sutra_tokenizer_load(bpe_unk, &t), t == SENTINEL);
    CASE_POST("tokenizer_load: empty path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_tokenizer_load("", &t), t == SENTINEL);
    CASE_POST("tokenizer_load: /dev/zero", SUTRA_ERR_IO, "/dev/zero", sutra_tokenizer_load("/dev/zero", &t),
              t == SENTINEL);
    if (t != SENTINEL) {
        sutra_tokenizer_free(t);
        t = SENTINEL;
    }

    CHECK("tokenizer_n_vocab(NULL) is -1", sutra_tokenizer_n_vocab(NULL) == -1);
    *out = NULL;
    if (sutra_tokenizer_load(tok_path, &t) != SUTRA_OK) {
        check("tokenizer setup", 0, "sutra_tokenizer_load of the tokenizer");
        return;
    }
    *out = t;
    CHECK("tokenizer_token_id(NULL, \"a\") is -1", sutra_tokenizer_token_id(NULL, "a") == -1);
    CHECK("tokenizer_token_id(t, NULL) is -1", sutra_tokenizer_token_id(t, NULL) == -1);
    CHECK("tokenizer_token_id(t, unknown) is -1", sutra_tokenizer_token_id(t, "no such token, surely") == -1);

    const char *text = "ROMEO: hello there";
    int32_t ids[64];
    size_t n = 777;
    CASE_POST("tokenize: NULL tokenizer", SUTRA_ERR_INVALID_ARGUMENT, "tokenizer",
              sutra_tokenize(NULL, text, strlen(text), false, ids, 64, &n), n == 777);
    CASE("tokenize: NULL n_ids", SUTRA_ERR_INVALID_ARGUMENT, "n_ids",
         sutra_tokenize(t, text, strlen(text), false, ids, 64, NULL));
    CASE_POST("tokenize: NULL text, text_len 5", SUTRA_ERR_INVALID_ARGUMENT, "text",
              sutra_tokenize(t, NULL, 5, false, ids, 64, &n), n == 777);
    CASE_POST("tokenize: invalid UTF-8", SUTRA_ERR_INVALID_ARGUMENT, "UTF-8",
              sutra_tokenize(t, "ab\xff\xfe", 4, false, ids, 64, &n), n == 777);
    size_t full = 0;
    CHECK("tokenize: the text needs several ids",
          sutra_tokenize(t, text, strlen(text), false, ids, 64, &full) == SUTRA_OK && full > 2);
    for (int i = 0; i < 64; i++) ids[i] = -77;
    char need[32];
    snprintf(need, sizeof need, "%zu needed", full);
    CASE_POST("tokenize: ids_cap 1", SUTRA_ERR_BUFFER_TOO_SMALL, need,
              sutra_tokenize(t, text, strlen(text), false, ids, 1, &n), n == full && ids[0] == -77);
    n = 777;
    CASE_POST("tokenize: size query (NULL ids_out, ids_cap 0)", SUTRA_ERR_BUFFER_TOO_SMALL, need,
              sutra_tokenize(t, text, strlen(text), false, NULL, 0, &n), n == full);
    CASE("tokenize: NULL ids_out, ids_cap 64", SUTRA_ERR_INVALID_ARGUMENT, "ids_out",
         sutra_tokenize(t, text, strlen(text), false, NULL, 64, &n));
    CASE_POST("tokenize: NULL text, text_len 0", SUTRA_OK, NULL, sutra_tokenize(t, NULL, 0, false, ids, 64, &n), n == 0);

    int32_t good[] = {50, 47, 65};
    int32_t negative[] = {50, -1};
    int32_t past[] = {50, 2048};
    int32_t imax[] = {INT32_MAX};
    char out_text[64];
    size_t nb = 777;
    CASE_POST("detokenize: NULL tokenizer", SUTRA_ERR_INVALID_ARGUMENT, "tokenizer",
              sutra_detokenize(NULL, good, 3, out_text, 64, &nb), nb == 777);
    CASE("detokenize: NULL n_bytes", SUTRA_ERR_INVALID_ARGUMENT, "n_bytes",
         sutra_detokenize(t, good, 3, out_text, 64, NULL));
    CASE_POST("detokenize: NULL ids, n_ids 3", SUTRA_ERR_INVALID_ARGUMENT, "ids",
              sutra_detokenize(t, NULL, 3, out_text, 64, &nb), nb == 777);
    CASE_POST("detokenize: id -1", SUTRA_ERR_INVALID_ARGUMENT, "-1", sutra_detokenize(t, negative, 2, out_text, 64, &nb),
              nb == 777);
    CASE_POST("detokenize: id = n_vocab (2048)", SUTRA_ERR_INVALID_ARGUMENT, "2048",
              sutra_detokenize(t, past, 2, out_text, 64, &nb), nb == 777);
    CASE_POST("detokenize: id INT32_MAX", SUTRA_ERR_INVALID_ARGUMENT, "2147483647",
              sutra_detokenize(t, imax, 1, out_text, 64, &nb), nb == 777);
    memset(out_text, '#', sizeof out_text);
    CASE_POST("detokenize: text_cap 1", SUTRA_ERR_BUFFER_TOO_SMALL, "3 needed",
              sutra_detokenize(t, good, 3, out_text, 1, &nb), nb == 3 && out_text[0] == '#');
    nb = 777;
    CASE_POST("detokenize: size query (NULL text_out, text_cap 0)", SUTRA_ERR_BUFFER_TOO_SMALL, "3 needed",
              sutra_detokenize(t, good, 3, NULL, 0, &nb), nb == 3);
    CASE("detokenize: NULL text_out, text_cap 64", SUTRA_ERR_INVALID_ARGUMENT, "text_out",
         sutra_detokenize(t, good, 3, NULL, 64, &nb));
    CASE_POST("detokenize: the tokenizer still works", SUTRA_OK, NULL, sutra_detokenize(t, good, 3, out_text, 64, &nb),
              nb == 3 && memcmp(out_text, "ROa", 3) == 0);
}

static void samplers(void) {
    sutra_sampler *smp = SENTINEL;
    CASE("sampler_new: NULL out_sampler", SUTRA_ERR_INVALID_ARGUMENT, "out_sampler", sutra_sampler_new(1, NULL));
    int32_t id = 3;
    float bias = 1.0f;
    float lg[8] = {0.1f, 0.5f, -1.0f, 2.0f, 0.3f, 0.0f, 1.5f, -0.5f};
    int32_t tok = -77;
    CASE("sampler_add_greedy: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_add_greedy(NULL));
    CASE("sampler_add_dist: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_add_dist(NULL));
    CASE("sampler_add_temperature: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
         sutra_sampler_add_temperature(NULL, 1.0f));
    CASE("sampler_add_top_k: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_add_top_k(NULL, 5));
    CASE("sampler_add_top_p: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_add_top_p(NULL, 0.9f, 1));
    CASE("sampler_add_min_p: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_add_min_p(NULL, 0.1f));
    CASE("sampler_add_penalties: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
         sutra_sampler_add_penalties(NULL, 64, 1.1f, 0.0f, 0.0f));
    CASE("sampler_add_rwkv_presence: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
         sutra_sampler_add_rwkv_presence(NULL, 0.1f, 0.1f, 0.99f));
    CASE("sampler_add_logit_bias: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
         sutra_sampler_add_logit_bias(NULL, &id, &bias, 1));
    CASE_POST("sampler_sample: NULL sampler", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
              sutra_sampler_sample(NULL, lg, 8, &tok), tok == -77);
    CASE("sampler_accept: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_accept(NULL, 1));
    CASE("sampler_reset: NULL", SUTRA_ERR_INVALID_ARGUMENT, "sampler", sutra_sampler_reset(NULL));

    sutra_sampler *ref = NULL;
    if (sutra_sampler_new(42, &smp) != SUTRA_OK || sutra_sampler_new(42, &ref) != SUTRA_OK) {
        check("sampler setup", 0, "sutra_sampler_new");
        return;
    }
    /* Every bad stage is refused and leaves the chain as it was. */
    CASE("sampler_add_top_p: p 1.5", SUTRA_ERR_INVALID_ARGUMENT, "top_p", sutra_sampler_add_top_p(smp, 1.5f, 1));
    CASE("sampler_add_top_p: p -0.1", SUTRA_ERR_INVALID_ARGUMENT, "top_p", sutra_sampler_add_top_p(smp, -0.1f, 1));
    CASE("sampler_add_top_p: p NaN", SUTRA_ERR_INVALID_ARGUMENT, "top_p", sutra_sampler_add_top_p(smp, NAN, 1));
    CASE("sampler_add_min_p: p 2", SUTRA_ERR_INVALID_ARGUMENT, "min_p", sutra_sampler_add_min_p(smp, 2.0f));
    CASE("sampler_add_min_p: p -1", SUTRA_ERR_INVALID_ARGUMENT, "min_p", sutra_sampler_add_min_p(smp, -1.0f));
    CASE("sampler_add_min_p: p NaN", SUTRA_ERR_INVALID_ARGUMENT, "min_p", sutra_sampler_add_min_p(smp, NAN));
    CASE("sampler_add_temperature: NaN", SUTRA_ERR_INVALID_ARGUMENT, "temperature",
         sutra_sampler_add_temperature(smp, NAN));
    CASE("sampler_add_temperature: +inf", SUTRA_ERR_INVALID_ARGUMENT, "temperature",
         sutra_sampler_add_temperature(smp, INFINITY));
    CASE("sampler_add_top_k: k -1", SUTRA_ERR_INVALID_ARGUMENT, "top_k", sutra_sampler_add_top_k(smp, -1));
    CASE("sampler_add_top_k: k INT32_MIN", SUTRA_ERR_INVALID_ARGUMENT, "top_k", sutra_sampler_add_top_k(smp, INT32_MIN));
    CASE("sampler_add_penalties: last_n -1", SUTRA_ERR_INVALID_ARGUMENT, "last_n",
         sutra_sampler_add_penalties(smp, -1, 1.1f, 0.0f, 0.0f));
    CASE("sampler_add_penalties: repeat 0", SUTRA_ERR_INVALID_ARGUMENT, "repeat",
         sutra_sampler_add_penalties(smp, 64, 0.0f, 0.0f, 0.0f));
    CASE("sampler_add_penalties: repeat -1", SUTRA_ERR_INVALID_ARGUMENT, "repeat",
         sutra_sampler_add_penalties(smp, 64, -1.0f, 0.0f, 0.0f));
    CASE("sampler_add_penalties: repeat NaN", SUTRA_ERR_INVALID_ARGUMENT, "repeat",
         sutra_sampler_add_penalties(smp, 64, NAN, 0.0f, 0.0f));
    CASE("sampler_add_penalties: frequency NaN", SUTRA_ERR_INVALID_ARGUMENT, "frequency",
         sutra_sampler_add_penalties(smp, 64, 1.1f, NAN, 0.0f));
    CASE("sampler_add_penalties: presence NaN", SUTRA_ERR_INVALID_ARGUMENT, "presence",
         sutra_sampler_add_penalties(smp, 64, 1.1f, 0.0f, NAN));
    CASE("sampler_add_rwkv_presence: decay 2", SUTRA_ERR_INVALID_ARGUMENT, "decay",
         sutra_sampler_add_rwkv_presence(smp, 0.1f, 0.1f, 2.0f));
    CASE("sampler_add_rwkv_presence: decay NaN", SUTRA_ERR_INVALID_ARGUMENT, "decay",
         sutra_sampler_add_rwkv_presence(smp, 0.1f, 0.1f, NAN));
    CASE("sampler_add_rwkv_presence: presence NaN", SUTRA_ERR_INVALID_ARGUMENT, "presence",
         sutra_sampler_add_rwkv_presence(smp, NAN, 0.1f, 0.99f));
    CASE("sampler_add_rwkv_presence: frequency NaN", SUTRA_ERR_INVALID_ARGUMENT, "frequency",
         sutra_sampler_add_rwkv_presence(smp, 0.1f, NAN, 0.99f));
    CASE("sampler_add_logit_bias: NULL ids, n 1", SUTRA_ERR_INVALID_ARGUMENT, "ids",
         sutra_sampler_add_logit_bias(smp, NULL, &bias, 1));
    CASE("sampler_add_logit_bias: NULL bias, n 1", SUTRA_ERR_INVALID_ARGUMENT, "bias",
         sutra_sampler_add_logit_bias(smp, &id, NULL, 1));
    int32_t negid = -4;
    CASE("sampler_add_logit_bias: id -4", SUTRA_ERR_INVALID_ARGUMENT, "-4",
         sutra_sampler_add_logit_bias(smp, &negid, &bias, 1));
    float nanbias = NAN;
    CASE("sampler_add_logit_bias: bias NaN", SUTRA_ERR_INVALID_ARGUMENT, "bias",
         sutra_sampler_add_logit_bias(smp, &id, &nanbias, 1));

    /* The chain still is the empty one: temperature 0.7 then dist, drawn as the reference. */
    sutra_sampler_add_temperature(smp, 0.7f);
    sutra_sampler_add_dist(smp);
    sutra_sampler_add_temperature(ref, 0.7f);
    sutra_sampler_add_dist(ref);
    CASE_POST("sampler_sample: NULL logits", SUTRA_ERR_INVALID_ARGUMENT, "logits",
              sutra_sampler_sample(smp, NULL, 8, &tok), tok == -77);
    CASE_POST("sampler_sample: n_vocab 0", SUTRA_ERR_INVALID_ARGUMENT, "empty", sutra_sampler_sample(smp, lg, 0, &tok),
              tok == -77);
    CASE("sampler_sample: NULL out_token", SUTRA_ERR_INVALID_ARGUMENT, "out_token", sutra_sampler_sample(smp, lg, 8, NULL));
    float withnan[8], withinf[8], allneg[8];
    for (int i = 0; i < 8; i++) {
        withnan[i] = withinf[i] = lg[i];
        allneg[i] = -INFINITY;
    }
    withnan[5] = NAN;
    withinf[2] = INFINITY;
    CASE_POST("sampler_sample: a NaN logit", SUTRA_ERR_INVALID_ARGUMENT, "logit 5",
              sutra_sampler_sample(smp, withnan, 8, &tok), tok == -77);
    CASE_POST("sampler_sample: a +inf logit", SUTRA_ERR_INVALID_ARGUMENT, "logit 2",
              sutra_sampler_sample(smp, withinf, 8, &tok), tok == -77);
    CASE_POST("sampler_sample: every logit -inf", SUTRA_ERR_INVALID_ARGUMENT, "-inf",
              sutra_sampler_sample(smp, allneg, 8, &tok), tok == -77);
    CASE("sampler_accept: token -1", SUTRA_ERR_INVALID_ARGUMENT, "-1", sutra_sampler_accept(smp, -1));
    int same = 1;
    for (int i = 0; i < 32; i++) {
        int32_t a = -1, b = -2;
        same &= sutra_sampler_sample(smp, lg, 8, &a) == SUTRA_OK && sutra_sampler_sample(ref, lg, 8, &b) == SUTRA_OK &&
                a == b;
    }
    CHECK("sampler: after the bad calls it draws as a fresh chain with the same seed", same);
    same = sutra_sampler_accept(smp, 3) == SUTRA_OK && sutra_sampler_accept(ref, 3) == SUTRA_OK;
    for (int i = 0; i < 32; i++) {
        int32_t a = -1, b = -2;
        same &= sutra_sampler_sample(smp, lg, 8, &a) == SUTRA_OK && sutra_sampler_sample(ref, lg, 8, &b) == SUTRA_OK &&
                a == b;
    }
    CHECK("sampler: after accept(3) too (no refused stage was added)", same);
    sutra_sampler_free(ref);
    sutra_sampler_free(smp);
}

static void generation(sutra_model *m, sutra_tokenizer *t) {
    sutra_session *s = NULL;
    sutra_sampler *smp = NULL;
    if (!t || sutra_session_new(m, &s) != SUTRA_OK || sutra_sampler_new(3, &smp) != SUTRA_OK ||
        sutra_sampler_add_greedy(smp) != SUTRA_OK) {
        check("generate setup", 0, "session, tokenizer and sampler");
        sutra_session_free(s);
        sutra_sampler_free(smp);
        return;
    }
    int32_t start[] = {1, 2};
    sutra_session_eval(s, start, 2, NULL);
    size_t blen = 0;
    unsigned char *blob = blob_of(s, &blen);
    float *ref = malloc((size_t)n_vocab * sizeof *ref);
    if (!blob || !probe(s, ref)) {
        check("generate setup", 0, "state blob and probe");
        return;
    }
#define SAME same_session(s, blob, blen, ref)
    sutra_generate_params gp = sutra_generate_default_params();
    gp.max_tokens = 3;
    sutra_generate_result res = {-5, -5, SUTRA_STOP_REASON_MAX_TOKENS};
    size_t bytes = 0;
    CASE_POST("generate: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_generate(NULL, t, smp, "a", 1, &gp, count_piece, &bytes, &res), res.n_generated == -5);
    CASE_POST("generate: NULL tokenizer", SUTRA_ERR_INVALID_ARGUMENT, "tokenizer",
              sutra_generate(s, NULL, smp, "a", 1, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    CASE_POST("generate: NULL sampler", SUTRA_ERR_INVALID_ARGUMENT, "sampler",
              sutra_generate(s, t, NULL, "a", 1, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    CASE_POST("generate: NULL prompt", SUTRA_ERR_INVALID_ARGUMENT, "prompt",
              sutra_generate(s, t, smp, NULL, 1, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    CASE_POST("generate: invalid UTF-8 prompt", SUTRA_ERR_INVALID_ARGUMENT, "UTF-8",
              sutra_generate(s, t, smp, "a\xc3", 2, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    CASE_POST("generate: empty prompt", SUTRA_ERR_INVALID_ARGUMENT, "prompt",
              sutra_generate(s, t, smp, "", 0, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    CASE_POST("generate: a prompt token past the model's vocabulary", SUTRA_ERR_INVALID_ARGUMENT, "out of range",
              sutra_generate(s, t, smp, "ROMEO", 5, &gp, count_piece, &bytes, &res), SAME && res.n_generated == -5);
    sutra_generate_params bad = gp;
    bad.max_tokens = -1;
    CASE_POST("generate: max_tokens -1", SUTRA_ERR_INVALID_ARGUMENT, "max_tokens",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    bad = gp;
    bad.n_stop_strings = 1;
    CASE_POST("generate: n_stop_strings 1, NULL stop_strings", SUTRA_ERR_INVALID_ARGUMENT, "stop_strings",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    const char *null_stop[] = {NULL};
    bad.stop_strings = null_stop;
    CASE_POST("generate: stop_strings[0] NULL", SUTRA_ERR_INVALID_ARGUMENT, "stop_strings[0]",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    const char *bad_stop[] = {"x\xff"};
    bad.stop_strings = bad_stop;
    CASE_POST("generate: stop_strings[0] not UTF-8", SUTRA_ERR_INVALID_ARGUMENT, "stop_strings[0]",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    bad = gp;
    bad.n_stop_tokens = 2;
    CASE_POST("generate: n_stop_tokens 2, NULL stop_tokens", SUTRA_ERR_INVALID_ARGUMENT, "stop_tokens",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    int32_t stops[] = {0, -1};
    bad.stop_tokens = stops;
    CASE_POST("generate: stop_tokens[1] -1", SUTRA_ERR_INVALID_ARGUMENT, "stop_tokens[1]",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
    stops[1] = n_vocab;
    CASE_POST("generate: stop_tokens[1] = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, "stop_tokens[1]",
              sutra_generate(s, t, smp, "a", 1, &bad, count_piece, &bytes, &res), SAME);
#undef SAME
    CASE_POST("generate: good call after the bad ones", SUTRA_OK, NULL,
              sutra_generate(s, t, smp, "a", 1, &gp, count_piece, &bytes, &res),
              res.n_generated == 3 && res.n_prompt_tokens == 1);
    CASE_POST("generate: NULL params, NULL callback, NULL result", SUTRA_OK, NULL,
              sutra_generate(s, t, smp, "b", 1, NULL, NULL, NULL, NULL), 1);
    free(blob);
    free(ref);
    sutra_sampler_free(smp);
    sutra_session_free(s);
}

static void adapters(sutra_model *m, sutra_model *mamba, const char *lora_rwkv7, const char *lora_mamba1) {
    sutra_adapter *a = SENTINEL;
    char cfg_path[640], w_path[640];
    snprintf(cfg_path, sizeof cfg_path, "%s/adapter_config.json", lora_rwkv7);
    snprintf(w_path, sizeof w_path, "%s/adapter.safetensors", lora_rwkv7);
    size_t cfg_len = 0, w_len = 0;
    unsigned char *cfg = read_all(cfg_path, &cfg_len);
    unsigned char *w = read_all(w_path, &w_len);
    const char *missing = tmp_path("no-such-adapter");

    CASE_POST("adapter_load: NULL model", SUTRA_ERR_INVALID_ARGUMENT, "model", sutra_adapter_load(NULL, lora_rwkv7, &a),
              a == SENTINEL);
    CASE_POST("adapter_load: NULL path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_adapter_load(m, NULL, &a),
              a == SENTINEL);
    CASE("adapter_load: NULL out_adapter", SUTRA_ERR_INVALID_ARGUMENT, "out_adapter",
         sutra_adapter_load(m, lora_rwkv7, NULL));
    CASE_POST("adapter_load: missing path", SUTRA_ERR_IO, missing, sutra_adapter_load(m, missing, &a), a == SENTINEL);
    const char *empty_dir = mkdir_tmp("adapter-empty");
    CASE_POST("adapter_load: empty folder", SUTRA_ERR_IO, "adapter-empty", sutra_adapter_load(m, empty_dir, &a),
              a == SENTINEL);
    const char *nocfg = mkdir_tmp("adapter-no-config");
    write_tmp("adapter-no-config/adapter.safetensors", w, w_len);
    CASE_POST("adapter_load: no adapter_config.json", SUTRA_ERR_IO, "adapter_config.json",
              sutra_adapter_load(m, nocfg, &a), a == SENTINEL);
    const char *badcfg = mkdir_tmp("adapter-bad-config");
    write_tmp("adapter-bad-config/adapter.safetensors", w, w_len);
    write_tmp("adapter-bad-config/adapter_config.json", "{\"r\": 4, \"lora_al", 17);
    CASE_POST("adapter_load: truncated adapter_config.json", SUTRA_ERR_FORMAT, "adapter_config.json",
              sutra_adapter_load(m, badcfg, &a), a == SENTINEL);
    const char *r0 = mkdir_tmp("adapter-r0");
    write_tmp("adapter-r0/adapter.safetensors", w, w_len);
    const char *r0cfg = "{\"r\": 0, \"lora_alpha\": 8}";
    write_tmp("adapter-r0/adapter_config.json", r0cfg, strlen(r0cfg));
    CASE_POST("adapter_load: r 0", SUTRA_ERR_FORMAT, "'r'", sutra_adapter_load(m, r0, &a), a == SENTINEL);
    const char *rmis = mkdir_tmp("adapter-r-mismatch");
    write_tmp("adapter-r-mismatch/adapter.safetensors", w, w_len);
    const char *r7cfg = "{\"r\": 7, \"lora_alpha\": 8}";
    write_tmp("adapter-r-mismatch/adapter_config.json", r7cfg, strlen(r7cfg));
    CASE_POST("adapter_load: r disagrees with the tensors", SUTRA_ERR_FORMAT, "r = 7", sutra_adapter_load(m, rmis, &a),
              a == SENTINEL);
    const char *prefix = mkdir_tmp("adapter-prefix-tuning");
    write_tmp("adapter-prefix-tuning/adapter.safetensors", w, w_len);
    const char *ptcfg = "{\"r\": 4, \"lora_alpha\": 8, \"peft_type\": \"PREFIX_TUNING\"}";
    write_tmp("adapter-prefix-tuning/adapter_config.json", ptcfg, strlen(ptcfg));
    CASE_POST("adapter_load: peft_type PREFIX_TUNING", SUTRA_ERR_UNSUPPORTED, "PREFIX_TUNING",
              sutra_adapter_load(m, prefix, &a), a == SENTINEL);
    const char *trunc = mkdir_tmp("adapter-truncated");
    write_tmp("adapter-truncated/adapter.safetensors", w, w_len / 2);
    write_tmp("adapter-truncated/adapter_config.json", cfg, cfg_len);
    CASE_POST("adapter_load: adapter.safetensors truncated to half", SUTRA_ERR_FORMAT, "adapter.safetensors",
              sutra_adapter_load(m, trunc, &a), a == SENTINEL);
    const char *garb = mkdir_tmp("adapter-garbage");
    write_tmp("adapter-garbage/adapter.safetensors", cfg, cfg_len);
    write_tmp("adapter-garbage/adapter_config.json", cfg, cfg_len);
    CASE_POST("adapter_load: adapter.safetensors is garbage", SUTRA_ERR_FORMAT, "adapter.safetensors",
              sutra_adapter_load(m, garb, &a), a == SENTINEL);
    CASE_POST("adapter_load: empty path", SUTRA_ERR_INVALID_ARGUMENT, "path", sutra_adapter_load(m, "", &a), a == SENTINEL);
    const char *zero = mkdir_tmp("adapter-config-dev-zero");
    write_tmp("adapter-config-dev-zero/adapter.safetensors", w, w_len);
    const char *zlink = tmp_path("adapter-config-dev-zero/adapter_config.json");
    if (symlink("/dev/zero", zlink) == 0) {
        remember(zlink);
        CASE_POST("adapter_load: adapter_config.json is /dev/zero", SUTRA_ERR_IO, "adapter_config.json",
                  sutra_adapter_load(m, zero, &a), a == SENTINEL);
    }
    CASE_POST("adapter_load: a Mamba-1 adapter for the RWKV-7 model", SUTRA_ERR_FORMAT, "backbone.layers.",
              sutra_adapter_load(m, lora_mamba1, &a), a == SENTINEL);
    CASE_POST("adapter_load: the RWKV-7 adapter for the Mamba-1 model", SUTRA_ERR_FORMAT, "blocks.",
              sutra_adapter_load(mamba, lora_rwkv7, &a), a == SENTINEL);
    free(cfg);
    free(w);

    sutra_adapter *good = NULL, *foreign = NULL;
    sutra_session *s = NULL;
    if (sutra_adapter_load(m, lora_rwkv7, &good) != SUTRA_OK || sutra_adapter_load(mamba, lora_mamba1, &foreign) != SUTRA_OK ||
        sutra_session_new(m, &s) != SUTRA_OK) {
        check("adapter setup", 0, "sutra_adapter_load of the two good adapters");
        sutra_adapter_free(good);
        sutra_adapter_free(foreign);
        sutra_session_free(s);
        return;
    }
    int32_t start[] = {4, 5};
    sutra_session_eval(s, start, 2, NULL);
    size_t blen = 0;
    unsigned char *blob = blob_of(s, &blen);
    float *base = malloc((size_t)n_vocab * sizeof *base);
    float *with = malloc((size_t)n_vocab * sizeof *with);
    probe(s, base);
#define SAME same_session(s, blob, blen, base)
    CASE_POST("session_set_adapter: NULL session", SUTRA_ERR_INVALID_ARGUMENT, "session",
              sutra_session_set_adapter(NULL, good, 1.0f), SAME);
    CASE_POST("session_set_adapter: NULL adapter", SUTRA_ERR_INVALID_ARGUMENT, "adapter",
              sutra_session_set_adapter(s, NULL, 1.0f), SAME);
    CASE_POST("session_set_adapter: scale NaN", SUTRA_ERR_INVALID_ARGUMENT, "scale",
              sutra_session_set_adapter(s, good, NAN), SAME);
    CASE_POST("session_set_adapter: scale +inf", SUTRA_ERR_INVALID_ARGUMENT, "scale",
              sutra_session_set_adapter(s, good, INFINITY), SAME);
    CASE_POST("session_set_adapter: adapter of the Mamba-1 model", SUTRA_ERR_INVALID_ARGUMENT, "another model",
              sutra_session_set_adapter(s, foreign, 1.0f), SAME);
    CASE("session_clear_adapters: NULL", SUTRA_ERR_INVALID_ARGUMENT, "session", sutra_session_clear_adapters(NULL));
    CASE_POST("session_set_adapter: attached, it changes the logits", SUTRA_OK, NULL,
              sutra_session_set_adapter(s, good, 1.0f),
              probe(s, with) && memcmp(with, base, (size_t)n_vocab * sizeof *with) != 0);
    CASE_POST("session_set_adapter: a bad scale keeps the attached adapter", SUTRA_ERR_INVALID_ARGUMENT, "scale",
              sutra_session_set_adapter(s, good, -NAN), same_session(s, blob, blen, with));
    sutra_adapter_free(good);
    float *after = malloc((size_t)n_vocab * sizeof *after);
    CHECK("session keeps the adapter after sutra_adapter_free",
          probe(s, after) && memcmp(after, with, (size_t)n_vocab * sizeof *after) == 0);
    CASE_POST("session_clear_adapters: back to the base logits", SUTRA_OK, NULL, sutra_session_clear_adapters(s), SAME);
#undef SAME
    free(after);
    free(with);
    free(base);
    free(blob);
    sutra_adapter_free(foreign);
    sutra_session_free(s);
}

static void trainers(sutra_model *m, sutra_model *rwkv4, sutra_model *mamba, const char *lora_mamba1) {
    sutra_trainer *tr = SENTINEL;
    sutra_train_params d = sutra_train_default_params();
    d.lora_rank = 2;
    d.target_modules = "att.key";
    CASE_POST("trainer_new: NULL model", SUTRA_ERR_INVALID_ARGUMENT, "model", sutra_trainer_new(NULL, NULL, &d, &tr),
              tr == SENTINEL);
    CASE("trainer_new: NULL out_trainer", SUTRA_ERR_INVALID_ARGUMENT, "out_trainer",
         sutra_trainer_new(m, NULL, &d, NULL));
    CASE_POST("trainer_new: an RWKV-4 model (no backward pass)", SUTRA_ERR_UNSUPPORTED, "rwkv7",
              sutra_trainer_new(rwkv4, NULL, &d, &tr), tr == SENTINEL);
    static const struct {
        const char *label, *needle;
        int field;
        double v;
    } bad[] = {
        {"trainer_new: lora_rank 0", "lora_rank", 0, 0},
        {"trainer_new: lora_rank -1", "lora_rank", 0, -1},
        {"trainer_new: lora_rank INT32_MAX", "lora_rank", 0, INT32_MAX},
        {"trainer_new: lora_alpha NaN", "lora_alpha", 1, NAN},
        {"trainer_new: learning_rate -1", "learning_rate", 2, -1},
        {"trainer_new: learning_rate NaN", "learning_rate", 2, NAN},
        {"trainer_new: beta1 1", "beta1", 3, 1},
        {"trainer_new: beta2 -0.1", "beta2", 4, -0.1},
        {"trainer_new: eps 0", "eps", 5, 0},
        {"trainer_new: eps -1e-8", "eps", 5, -1e-8},
        {"trainer_new: weight_decay +inf", "weight_decay", 6, INFINITY},
        {"trainer_new: grad_clip -1", "grad_clip", 7, -1},
        {"trainer_new: grad_clip NaN", "grad_clip", 7, NAN},
        {"trainer_new: bptt_chunk -1", "bptt_chunk", 8, -1},
        {"trainer_new: train_state 3", "train_state", 9, 3},
        {"trainer_new: train_state -1", "train_state", 9, -1},
        {"trainer_new: state_learning_rate -1", "state_learning_rate", 10, -1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sutra_train_params p = d;
        double v = bad[i].v;
        switch (bad[i].field) {
        case 0: p.lora_rank = (int32_t)v; break;
        case 1: p.lora_alpha = (float)v; break;
        case 2: p.learning_rate = (float)v; break;
        case 3: p.beta1 = (float)v; break;
        case 4: p.beta2 = (float)v; break;
        case 5: p.eps = (float)v; break;
        case 6: p.weight_decay = (float)v; break;
        case 7: p.grad_clip = (float)v; break;
        case 8: p.bptt_chunk = (int32_t)v; break;
        case 9: p.train_state = (int32_t)v; break;
        default: p.state_learning_rate = (float)v; break;
        }
        CASE_POST(bad[i].label, SUTRA_ERR_INVALID_ARGUMENT, bad[i].needle, sutra_trainer_new(m, NULL, &p, &tr),
                  tr == SENTINEL);
    }
    sutra_train_params p = d;
    p.target_modules = "no.such.module";
    CASE_POST("trainer_new: target_modules naming nothing", SUTRA_ERR_INVALID_ARGUMENT, "target_modules",
              sutra_trainer_new(m, NULL, &p, &tr), tr == SENTINEL);
    p.target_modules = "att.key,\xff\xfe";
    CASE_POST("trainer_new: target_modules not UTF-8", SUTRA_ERR_INVALID_ARGUMENT, "target_modules",
              sutra_trainer_new(m, NULL, &p, &tr), tr == SENTINEL);
    sutra_adapter *foreign = NULL;
    if (sutra_adapter_load(mamba, lora_mamba1, &foreign) == SUTRA_OK) {
        CASE_POST("trainer_new: init adapter of the Mamba-1 model", SUTRA_ERR_INVALID_ARGUMENT, "another model",
                  sutra_trainer_new(m, foreign, &d, &tr), tr == SENTINEL);
    }

    if (sutra_trainer_new(m, NULL, &d, &tr) != SUTRA_OK) {
        check("trainer setup", 0, "sutra_trainer_new with rank 2 on att.key");
        sutra_adapter_free(foreign);
        return;
    }
    int32_t toks[] = {1, 2, 3, 4, 5, 6}, tgts[] = {2, 3, 4, 5, 6, 7};
    float loss = -1.0f, loss0 = -1.0f;
    CASE("trainer_apply: before any compute", SUTRA_ERR_INVALID_ARGUMENT, "compute", sutra_trainer_apply(tr));
    CHECK("trainer setup: compute", sutra_trainer_compute(tr, toks, tgts, 2, 3, &loss0) == SUTRA_OK && loss0 > 0.0f);
    const char *gname = "base_model.model.blocks.0.att.key.lora_A.weight";
    float *g0 = malloc(2 * 128 * sizeof *g0), *g1 = malloc(2 * 128 * sizeof *g1);
    CHECK("trainer setup: gradient of blocks.0.att.key lora_A [2, 128]",
          sutra_trainer_get_gradient(tr, gname, g0, 2 * 128) == SUTRA_OK);
#define SAME_GRAD \
    (sutra_trainer_get_gradient(tr, gname, g1, 2 * 128) == SUTRA_OK && memcmp(g0, g1, 2 * 128 * sizeof *g1) == 0)
    int32_t past[] = {1, 2, n_vocab, 4, 5, 6}, negt[] = {1, -1, 3, 4, 5, 6};
    int32_t tpast[] = {2, 3, 4, 5, 6, n_vocab}, allneg[] = {-1, -1, -1, -1, -1, -1};
    CASE("trainer_compute: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
         sutra_trainer_compute(NULL, toks, tgts, 2, 3, &loss));
    CASE_POST("trainer_compute: NULL tokens", SUTRA_ERR_INVALID_ARGUMENT, "tokens",
              sutra_trainer_compute(tr, NULL, tgts, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: NULL targets", SUTRA_ERR_INVALID_ARGUMENT, "targets",
              sutra_trainer_compute(tr, toks, NULL, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: NULL loss_out", SUTRA_ERR_INVALID_ARGUMENT, "loss_out",
              sutra_trainer_compute(tr, toks, tgts, 2, 3, NULL), SAME_GRAD);
    CASE_POST("trainer_compute: n_rows 0", SUTRA_ERR_INVALID_ARGUMENT, "n_rows",
              sutra_trainer_compute(tr, toks, tgts, 0, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: n_tokens 0", SUTRA_ERR_INVALID_ARGUMENT, "n_tokens",
              sutra_trainer_compute(tr, toks, tgts, 2, 0, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: n_rows * n_tokens overflows", SUTRA_ERR_INVALID_ARGUMENT, "overflow",
              sutra_trainer_compute(tr, toks, tgts, SIZE_MAX / 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: tokens[2] = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, "tokens[2]",
              sutra_trainer_compute(tr, past, tgts, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: tokens[1] = -1", SUTRA_ERR_INVALID_ARGUMENT, "tokens[1]",
              sutra_trainer_compute(tr, negt, tgts, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: targets[5] = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, "targets[5]",
              sutra_trainer_compute(tr, toks, tpast, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE_POST("trainer_compute: every target negative", SUTRA_ERR_INVALID_ARGUMENT, "target",
              sutra_trainer_compute(tr, toks, allneg, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE("trainer_step: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
         sutra_trainer_step(NULL, toks, tgts, 2, 3, &loss));
    CASE_POST("trainer_step: tokens[2] = n_vocab", SUTRA_ERR_INVALID_ARGUMENT, "tokens[2]",
              sutra_trainer_step(tr, past, tgts, 2, 3, &loss), loss == -1.0f && SAME_GRAD);
    CASE("trainer_apply: NULL", SUTRA_ERR_INVALID_ARGUMENT, "trainer", sutra_trainer_apply(NULL));

    CASE("trainer_get_gradient: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
         sutra_trainer_get_gradient(NULL, gname, g1, 256));
    CASE("trainer_get_gradient: NULL name", SUTRA_ERR_INVALID_ARGUMENT, "name",
         sutra_trainer_get_gradient(tr, NULL, g1, 256));
    CASE("trainer_get_gradient: unknown name", SUTRA_ERR_INVALID_ARGUMENT, "blocks.0.ffn.key.lora_A.weight",
         sutra_trainer_get_gradient(tr, "base_model.model.blocks.0.ffn.key.lora_A.weight", g1, 256));
    CASE("trainer_get_gradient: n one short", SUTRA_ERR_INVALID_ARGUMENT, "n = 255",
         sutra_trainer_get_gradient(tr, gname, g1, 255));
    CASE("trainer_get_gradient: NULL out", SUTRA_ERR_INVALID_ARGUMENT, "out",
         sutra_trainer_get_gradient(tr, gname, NULL, 256));
    CASE("trainer_get_gradient: \"state\" when the state is not tuned", SUTRA_ERR_INVALID_ARGUMENT, "state",
         sutra_trainer_get_gradient(tr, "state", g1, 256));

    sutra_adapter *snap = SENTINEL;
    CASE_POST("trainer_get_adapter: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
              sutra_trainer_get_adapter(NULL, &snap), snap == SENTINEL);
    CASE("trainer_get_adapter: NULL out_adapter", SUTRA_ERR_INVALID_ARGUMENT, "out_adapter",
         sutra_trainer_get_adapter(tr, NULL));
    CASE("trainer_save_adapter: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
         sutra_trainer_save_adapter(NULL, tmp_root));
    CASE("trainer_save_adapter: NULL dir", SUTRA_ERR_INVALID_ARGUMENT, "dir", sutra_trainer_save_adapter(tr, NULL));
    const char *file = write_tmp("a-file", "x", 1);
    const char *under = tmp_path("a-file/adapter");
    CASE_POST("trainer_save_adapter: dir under a regular file", SUTRA_ERR_IO, "a-file",
              sutra_trainer_save_adapter(tr, under), !exists(under));
    CASE_POST("trainer_save_adapter: dir is a regular file", SUTRA_ERR_IO, "a-file",
              sutra_trainer_save_adapter(tr, file), 1);

    /* An empty dir: run from the temporary folder, so a wrong success writes there. */
    char cwd[1024];
    if (getcwd(cwd, sizeof cwd) && chdir(tmp_root) == 0) {
        remember(tmp_path("adapter_config.json"));
        remember(tmp_path("adapter_model.safetensors"));
        CASE_POST("trainer_save_adapter: empty dir", SUTRA_ERR_INVALID_ARGUMENT, "dir", sutra_trainer_save_adapter(tr, ""),
                  !exists("adapter_config.json") && !exists("adapter_model.safetensors"));
        if (chdir(cwd) != 0) exit(2);
    }

    size_t n = 12345;
    CASE_POST("trainer_state_size: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer",
              sutra_trainer_state_size(NULL, &n), n == 12345);
    CASE("trainer_state_size: NULL out_bytes", SUTRA_ERR_INVALID_ARGUMENT, "out_bytes",
         sutra_trainer_state_size(tr, NULL));
    sutra_trainer_state_size(tr, &n);
    unsigned char *sb = malloc(n), *sb2 = malloc(n);
    char need[32];
    snprintf(need, sizeof need, "%zu", n);
    memset(sb, 0xCD, n);
    CASE("trainer_get_state: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer", sutra_trainer_get_state(NULL, sb, n));
    CASE("trainer_get_state: NULL buf", SUTRA_ERR_INVALID_ARGUMENT, "buf", sutra_trainer_get_state(tr, NULL, n));
    CASE_POST("trainer_get_state: buffer one byte short", SUTRA_ERR_BUFFER_TOO_SMALL, need,
              sutra_trainer_get_state(tr, sb, n - 1), sb[0] == 0xCD);
    CHECK("trainer_get_state: full buffer", sutra_trainer_get_state(tr, sb, n) == SUTRA_OK);
    memcpy(sb2, sb, n);
    sb2[n / 2] ^= 0x20;
    CASE("trainer_set_state: NULL trainer", SUTRA_ERR_INVALID_ARGUMENT, "trainer", sutra_trainer_set_state(NULL, sb, n));
    CASE("trainer_set_state: NULL buf", SUTRA_ERR_INVALID_ARGUMENT, "buf", sutra_trainer_set_state(tr, NULL, n));
    CASE("trainer_set_state: truncated blob", SUTRA_ERR_FORMAT, "state", sutra_trainer_set_state(tr, sb, n - 1));
    CASE("trainer_set_state: bit flip", SUTRA_ERR_FORMAT, "checksum", sutra_trainer_set_state(tr, sb2, n));
    sutra_session *ms = NULL;
    size_t mlen = 0;
    unsigned char *mblob = NULL;
    if (sutra_session_new(mamba, &ms) == SUTRA_OK) mblob = blob_of(ms, &mlen);
    if (mblob)
        CASE("trainer_set_state: blob of a Mamba-1 session", SUTRA_ERR_FORMAT, "another shape",
             sutra_trainer_set_state(tr, mblob, mlen));
    CASE_POST("trainer_get_state: unchanged by the bad blobs", SUTRA_OK, NULL, sutra_trainer_get_state(tr, sb2, n),
              memcmp(sb, sb2, n) == 0);
    CASE_POST("trainer_compute: the same loss and gradient after the bad calls", SUTRA_OK, NULL,
              sutra_trainer_compute(tr, toks, tgts, 2, 3, &loss), loss == loss0 && SAME_GRAD);
    CASE_POST("trainer_step: still trains", SUTRA_OK, NULL, sutra_trainer_step(tr, toks, tgts, 2, 3, &loss),
              loss == loss0);
    float after = -1.0f;
    CHECK("trainer: the loss falls after a step",
          sutra_trainer_compute(tr, toks, tgts, 2, 3, &after) == SUTRA_OK && after < loss0);
#undef SAME_GRAD
    free(mblob);
    sutra_session_free(ms);
    free(sb);
    free(sb2);
    free(g0);
    free(g1);
    sutra_adapter_free(foreign);
    sutra_trainer_free(tr);
}

static void quantizing(const char *model_path, const char *tok_path) {
    sutra_quantize_params d = sutra_quantize_default_params();
    d.n_threads = 1;
    const char *out = tmp_path("quantized.safetensors");
    remember(out);
    const char *missing = tmp_path("no-such-input.safetensors");
    const char *garbage = tmp_path("garbage.safetensors"); /* written by model_loading */
    const char *nodir = tmp_path("no-such-dir/out.safetensors");
    CASE_POST("quantize_model: NULL in_path", SUTRA_ERR_INVALID_ARGUMENT, "in_path",
              sutra_quantize_model(NULL, out, &d, NULL, NULL), !exists(out));
    CASE_POST("quantize_model: NULL out_path", SUTRA_ERR_INVALID_ARGUMENT, "out_path",
              sutra_quantize_model(model_path, NULL, &d, NULL, NULL), 1);
    static const struct {
        const char *label, *needle;
        int field, v;
    } bad[] = {
        {"quantize_model: qtype 7", "qtype 7", 0, 7},
        {"quantize_model: qtype -1", "qtype -1", 0, -1},
        {"quantize_model: method -3", "method -3", 1, -3},
        {"quantize_model: method 2", "method 2", 1, 2},
        {"quantize_model: group_size 0", "group_size", 2, 0},
        {"quantize_model: group_size -32", "group_size", 2, -32},
        {"quantize_model: group_size 48", "48", 2, 48},
        {"quantize_model: calib_tokens -1", "calib_tokens", 3, -1},
        {"quantize_model: n_threads -1", "n_threads", 4, -1},
        {"quantize_model: n_threads INT32_MAX", "n_threads", 4, INT32_MAX},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sutra_quantize_params p = d;
        switch (bad[i].field) {
        case 0: p.qtype = bad[i].v; break;
        case 1: p.method = bad[i].v; break;
        case 2: p.group_size = bad[i].v; break;
        case 3: p.calib_tokens = bad[i].v; break;
        default: p.n_threads = bad[i].v; break;
        }
        CASE_POST(bad[i].label, SUTRA_ERR_INVALID_ARGUMENT, bad[i].needle,
                  sutra_quantize_model(model_path, out, &p, NULL, NULL), !exists(out));
    }
    sutra_quantize_params p = d;
    p.method = SUTRA_QUANT_METHOD_AWQ;
    CASE_POST("quantize_model: AWQ without calib_path", SUTRA_ERR_INVALID_ARGUMENT, "calib_path",
              sutra_quantize_model(model_path, out, &p, NULL, NULL), !exists(out));
    p.calib_path = missing;
    CASE_POST("quantize_model: AWQ with a missing calib_path", SUTRA_ERR_IO, missing,
              sutra_quantize_model(model_path, out, &p, NULL, NULL), !exists(out));
    p.calib_path = write_tmp("calib-latin1.txt", "caf\xe9 cr\xe8me", 10);
    p.tokenizer_path = tok_path;
    CASE_POST("quantize_model: AWQ calibration text not UTF-8", SUTRA_ERR_FORMAT, "calib-latin1.txt",
              sutra_quantize_model(model_path, out, &p, NULL, NULL), !exists(out));
    p.calib_path = "/dev/zero";
    CASE_POST("quantize_model: AWQ calibration text /dev/zero", SUTRA_ERR_IO, "/dev/zero",
              sutra_quantize_model(model_path, out, &p, NULL, NULL), !exists(out));
    CASE_POST("quantize_model: empty in_path", SUTRA_ERR_INVALID_ARGUMENT, "in_path", sutra_quantize_model("", out, &d, NULL, NULL),
              !exists(out));
    CASE_POST("quantize_model: empty out_path", SUTRA_ERR_INVALID_ARGUMENT, "out_path",
              sutra_quantize_model(model_path, "", &d, NULL, NULL), 1);
    CASE_POST("quantize_model: missing input", SUTRA_ERR_IO, missing, sutra_quantize_model(missing, out, &d, NULL, NULL),
              !exists(out));
    CASE_POST("quantize_model: garbage input", SUTRA_ERR_FORMAT, garbage,
              sutra_quantize_model(garbage, out, &d, NULL, NULL), !exists(out));
    CASE_POST("quantize_model: output in a missing folder", SUTRA_ERR_IO, "no-such-dir",
              sutra_quantize_model(model_path, nodir, &d, NULL, NULL), !exists(nodir));
    int calls = 0;
    CASE_POST("quantize_model: progress callback cancels", SUTRA_ERR_CANCELLED, "cancel",
              sutra_quantize_model(model_path, out, &d, cancel_progress, &calls), !exists(out) && calls >= 1);
    sutra_model *q = NULL;
    CASE_POST("quantize_model: q8 after the bad calls", SUTRA_OK, NULL,
              (d.qtype = SUTRA_QUANT_TYPE_Q8, sutra_quantize_model(model_path, out, &d, NULL, NULL)),
              sutra_model_load(out, NULL, &q) == SUTRA_OK && sutra_model_n_vocab(q) == n_vocab);
    sutra_model_free(q);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s RWKV7 RWKV4 MAMBA1 LORA_RWKV7 LORA_MAMBA1 TOKENIZER\n", argv[0]);
        return 2;
    }
    const char *base = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/sutra-bad-input-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_root)) {
        fprintf(stderr, "cannot create a temporary folder\n");
        return 2;
    }

    basics();
    model_loading(argv[1]);
    sutra_model_params one = sutra_model_default_params();
    one.n_threads = 2;
    sutra_model *m = NULL, *rwkv4 = NULL, *mamba = NULL;
    if (sutra_model_load(argv[1], &one, &m) != SUTRA_OK || sutra_model_load(argv[2], &one, &rwkv4) != SUTRA_OK ||
        sutra_model_load(argv[3], &one, &mamba) != SUTRA_OK) {
        fprintf(stderr, "cannot load the fixtures: %s\n", sutra_last_error());
        cleanup_tmp();
        return 2;
    }
    n_vocab = sutra_model_n_vocab(m);
    sutra_tokenizer *tok = NULL;
    sessions(m, mamba);
    tokenizers(argv[6], &tok);
    samplers();
    generation(m, tok);
    adapters(m, mamba, argv[4], argv[5]);
    trainers(m, rwkv4, mamba, argv[5]);
    quantizing(argv[1], argv[6]);
    /* The model handles the caller owns still work after everything above. */
    sutra_session *s = NULL;
    int32_t t = 11;
    float *l = malloc((size_t)n_vocab * sizeof *l);
    CHECK("models still evaluate at the end",
          sutra_session_new(m, &s) == SUTRA_OK && sutra_session_eval(s, &t, 1, l) == SUTRA_OK);
    free(l);
    sutra_session_free(s);
    sutra_tokenizer_free(tok);
    sutra_model_free(mamba);
    sutra_model_free(rwkv4);
    sutra_model_free(m);
    cleanup_tmp();
    CHECK("the temporary folder is gone", !exists(tmp_root));

    printf("bad_input: %d ok, %d failed, %d known library bugs, %d skipped (known crashes)\n", n_ok, n_fail, n_known,
           n_skip);
    return n_fail == 0 ? 0 : 1;
}
