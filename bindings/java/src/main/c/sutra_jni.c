/* JNI glue between the Java classes of package org.libsutra and the C API (include/sutra.h).
 *
 * Thin by design: every function checks what only the glue can check (Java array lengths
 * against the sizes it hands to C, C strings being NUL-terminated, sizes fitting a Java
 * array), converts Java arrays to C buffers, calls one or two sutra_ functions and turns a
 * failed status into an org.libsutra.SutraException carrying the status code, its name
 * (sutra_status_name) and the message of sutra_last_error(). NULL handles and NULL arrays
 * are passed to libsutra as NULL, which reports them as SUTRA_ERR_INVALID_ARGUMENT naming
 * the argument. Text crosses as UTF-8 byte arrays (Java encodes and decodes), never as JNI
 * "modified UTF-8" strings.
 *
 * Every native method is a static method of org.libsutra.Native; handles are jlong. */

#include <jni.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sutra.h"

static jclass g_exception;      /* org.libsutra.SutraException (global reference) */
static jmethodID g_exception_ctor; /* SutraException(int status, String name, byte[] message) */

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM *vm, void *reserved) {
    JNIEnv *env;
    (void)reserved;
    if ((*vm)->GetEnv(vm, (void **)&env, JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
    jclass cls = (*env)->FindClass(env, "org/libsutra/SutraException");
    if (cls == NULL) return JNI_ERR;
    g_exception = (jclass)(*env)->NewGlobalRef(env, cls);
    (*env)->DeleteLocalRef(env, cls);
    if (g_exception == NULL) return JNI_ERR;
    g_exception_ctor = (*env)->GetMethodID(env, g_exception, "<init>", "(ILjava/lang/String;[B)V");
    if (g_exception_ctor == NULL) return JNI_ERR;
    return JNI_VERSION_1_6;
}

/* ---- errors -------------------------------------------------------------------------- */

static jbyteArray new_bytes(JNIEnv *env, const char *p, size_t len) {
    if (len > (size_t)INT32_MAX) {
        (*env)->ThrowNew(env, (*env)->FindClass(env, "java/lang/OutOfMemoryError"),
                         "more than 2^31-1 bytes for a Java array");
        return NULL;
    }
    jbyteArray b = (*env)->NewByteArray(env, (jsize)len);
    if (b != NULL && len > 0) (*env)->SetByteArrayRegion(env, b, 0, (jsize)len, (const jbyte *)p);
    return b;
}

/* Throws SutraException(status, sutra_status_name(status), message) unless an exception is
   already pending. */
static void throw_sutra(JNIEnv *env, int status, const char *message) {
    if ((*env)->ExceptionCheck(env)) return;
    /* The message first: sutra_last_error() is valid until this thread's next sutra_ call. */
    jbyteArray msg = new_bytes(env, message, strlen(message));
    if (msg == NULL) return;
    jstring name = (*env)->NewStringUTF(env, sutra_status_name(status));
    if (name == NULL) return;
    jobject e = (*env)->NewObject(env, g_exception, g_exception_ctor, (jint)status, name, msg);
    if (e != NULL) (*env)->Throw(env, (jthrowable)e);
}

/* 1 when st is SUTRA_OK; otherwise throws the library's error and returns 0. */
static int ok(JNIEnv *env, enum sutra_status st) {
    if (st == SUTRA_OK) return 1;
    throw_sutra(env, (int)st, sutra_last_error());
    return 0;
}

static void throw_invalid(JNIEnv *env, const char *message) {
    throw_sutra(env, SUTRA_ERR_INVALID_ARGUMENT, message);
}

/* ---- array access ---------------------------------------------------------------------- */

/* A pinned or copied view of a Java primitive array; NULL array gives a NULL pointer. */
typedef struct { jarray array; void *ptr; jsize len; } view;

static int get_ints(JNIEnv *env, jintArray a, view *v) {
    v->array = a; v->ptr = NULL; v->len = 0;
    if (a == NULL) return 1;
    v->len = (*env)->GetArrayLength(env, a);
    v->ptr = (*env)->GetIntArrayElements(env, a, NULL);
    return v->ptr != NULL;
}
static void release_ints(JNIEnv *env, view *v, jint mode) {
    if (v->ptr) (*env)->ReleaseIntArrayElements(env, (jintArray)v->array, (jint *)v->ptr, mode);
    v->ptr = NULL;
}
static int get_floats(JNIEnv *env, jfloatArray a, view *v) {
    v->array = a; v->ptr = NULL; v->len = 0;
    if (a == NULL) return 1;
    v->len = (*env)->GetArrayLength(env, a);
    v->ptr = (*env)->GetFloatArrayElements(env, a, NULL);
    return v->ptr != NULL;
}
static void release_floats(JNIEnv *env, view *v, jint mode) {
    if (v->ptr) (*env)->ReleaseFloatArrayElements(env, (jfloatArray)v->array, (jfloat *)v->ptr, mode);
    v->ptr = NULL;
}
static int get_bytes(JNIEnv *env, jbyteArray a, view *v) {
    v->array = a; v->ptr = NULL; v->len = 0;
    if (a == NULL) return 1;
    v->len = (*env)->GetArrayLength(env, a);
    v->ptr = (*env)->GetByteArrayElements(env, a, NULL);
    return v->ptr != NULL;
}
static void release_bytes(JNIEnv *env, view *v, jint mode) {
    if (v->ptr) (*env)->ReleaseByteArrayElements(env, (jbyteArray)v->array, (jbyte *)v->ptr, mode);
    v->ptr = NULL;
}

/* A NUL-terminated C string from a byte array that Java encoded with a final 0 (NULL stays
   NULL for libsutra to report). Anything else is refused rather than read past its end. */
static int get_cstr(JNIEnv *env, jbyteArray a, const char *what, view *v) {
    if (!get_bytes(env, a, v)) return 0;
    if (v->ptr != NULL && (v->len == 0 || ((const char *)v->ptr)[v->len - 1] != 0)) {
        release_bytes(env, v, JNI_ABORT);
        char msg[160];
        snprintf(msg, sizeof msg, "%s: not a NUL-terminated string (glue bug)", what);
        throw_invalid(env, msg);
        return 0;
    }
    return 1;
}

#define H(type, h) ((type *)(intptr_t)(h))
#define J(p) ((jlong)(intptr_t)(p))
#define FN(name) JNICALL Java_org_libsutra_Native_##name

/* ---- library ---------------------------------------------------------------------------- */

JNIEXPORT jstring FN(version)(JNIEnv *env, jclass c) {
    (void)c;
    return (*env)->NewStringUTF(env, sutra_version());
}

JNIEXPORT jstring FN(systemInfo)(JNIEnv *env, jclass c) {
    (void)c;
    return (*env)->NewStringUTF(env, sutra_system_info());
}

JNIEXPORT jstring FN(statusName)(JNIEnv *env, jclass c, jint status) {
    (void)c;
    return (*env)->NewStringUTF(env, sutra_status_name(status));
}

/* ---- model ------------------------------------------------------------------------------ */

JNIEXPORT void FN(modelDefaultParams)(JNIEnv *env, jclass c, jintArray out) {
    (void)c;
    sutra_model_params p = sutra_model_default_params();
    if (out == NULL || (*env)->GetArrayLength(env, out) != 3) {
        throw_invalid(env, "modelDefaultParams: out must hold 3 ints");
        return;
    }
    jint v[3] = {p.n_threads, p.use_mmap ? 1 : 0, p.check_finite ? 1 : 0};
    (*env)->SetIntArrayRegion(env, out, 0, 3, v);
}

static sutra_model_params model_params(jint n_threads, jboolean use_mmap, jboolean check_finite) {
    sutra_model_params p = sutra_model_default_params();
    p.n_threads = n_threads;
    p.use_mmap = use_mmap == JNI_TRUE;
    p.check_finite = check_finite == JNI_TRUE;
    return p;
}

JNIEXPORT jlong FN(modelLoad)(JNIEnv *env, jclass c, jbyteArray path, jint n_threads,
                              jboolean use_mmap, jboolean check_finite) {
    (void)c;
    view p;
    if (!get_cstr(env, path, "path", &p)) return 0;
    sutra_model_params params = model_params(n_threads, use_mmap, check_finite);
    sutra_model *m = NULL;
    enum sutra_status st = sutra_model_load((const char *)p.ptr, &params, &m);
    release_bytes(env, &p, JNI_ABORT);
    return ok(env, st) ? J(m) : 0;
}

JNIEXPORT jlong FN(modelLoadFromBytes)(JNIEnv *env, jclass c, jbyteArray data, jint n_threads,
                                       jboolean use_mmap, jboolean check_finite) {
    (void)c;
    view d;
    if (!get_bytes(env, data, &d)) return 0;
    sutra_model_params params = model_params(n_threads, use_mmap, check_finite);
    sutra_model *m = NULL;
    enum sutra_status st =
        sutra_model_load_from_memory((const uint8_t *)d.ptr, (size_t)d.len, &params, &m);
    release_bytes(env, &d, JNI_ABORT);
    return ok(env, st) ? J(m) : 0;
}

/* `len` bytes at `offset` of a direct ByteBuffer (e.g. a memory-mapped Android asset). */
JNIEXPORT jlong FN(modelLoadFromBuffer)(JNIEnv *env, jclass c, jobject buffer, jlong offset,
                                        jlong len, jint n_threads, jboolean use_mmap,
                                        jboolean check_finite) {
    (void)c;
    const uint8_t *base = NULL;
    if (buffer != NULL) {
        base = (const uint8_t *)(*env)->GetDirectBufferAddress(env, buffer);
        jlong cap = (*env)->GetDirectBufferCapacity(env, buffer);
        if (base == NULL || cap < 0) {
            throw_invalid(env, "buffer: not a direct ByteBuffer");
            return 0;
        }
        if (offset < 0 || len < 0 || offset > cap || len > cap - offset) {
            throw_invalid(env, "buffer: offset and length outside the buffer");
            return 0;
        }
        base += offset;
    }
    sutra_model_params params = model_params(n_threads, use_mmap, check_finite);
    sutra_model *m = NULL;
    if (!ok(env, sutra_model_load_from_memory(base, buffer ? (size_t)len : 0, &params, &m))) return 0;
    return J(m);
}

JNIEXPORT void FN(modelFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_model_free(H(sutra_model, h));
}

JNIEXPORT jint FN(modelNVocab)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    return sutra_model_n_vocab(H(sutra_model, h));
}

/* Fills out[10] with family, version, n_layer, n_embd, n_vocab, n_head, head_size, n_params,
   weight_dtype, bytes_per_token; returns the architecture name. */
JNIEXPORT jstring FN(modelInfo)(JNIEnv *env, jclass c, jlong h, jlongArray out) {
    (void)c;
    if (out == NULL || (*env)->GetArrayLength(env, out) != 10) {
        throw_invalid(env, "modelInfo: out must hold 10 longs");
        return NULL;
    }
    sutra_model_info i;
    if (!ok(env, sutra_model_get_info(H(sutra_model, h), &i))) return NULL;
    jlong v[10] = {(jlong)i.family, i.version, i.n_layer, i.n_embd, i.n_vocab, i.n_head,
                   i.head_size, (jlong)i.n_params, (jlong)i.weight_dtype, (jlong)i.bytes_per_token};
    (*env)->SetLongArrayRegion(env, out, 0, 10, v);
    return (*env)->NewStringUTF(env, i.architecture ? i.architecture : "");
}

/* ---- session ---------------------------------------------------------------------------- */

JNIEXPORT jlong FN(sessionNew)(JNIEnv *env, jclass c, jlong model) {
    (void)c;
    sutra_session *s = NULL;
    return ok(env, sutra_session_new(H(sutra_model, model), &s)) ? J(s) : 0;
}

JNIEXPORT void FN(sessionFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_session_free(H(sutra_session, h));
}

JNIEXPORT void FN(sessionReset)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_session_reset(H(sutra_session, h)));
}

JNIEXPORT jlong FN(sessionClone)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    sutra_session *s = NULL;
    return ok(env, sutra_session_clone(H(sutra_session, h), &s)) ? J(s) : 0;
}

/* Feeds tokens; returns n_vocab logits (null when want_logits is false). */
JNIEXPORT jfloatArray FN(sessionEval)(JNIEnv *env, jclass c, jlong h, jintArray tokens,
                                      jint n_vocab, jboolean stepwise, jboolean want_logits) {
    (void)c;
    if (want_logits && n_vocab <= 0) {
        throw_invalid(env, "n_vocab must be positive");
        return NULL;
    }
    jfloatArray out = NULL;
    view lv = {NULL, NULL, 0}, tv;
    if (want_logits) {
        out = (*env)->NewFloatArray(env, n_vocab);
        if (out == NULL || !get_floats(env, out, &lv)) return NULL;
    }
    if (!get_ints(env, tokens, &tv)) {
        release_floats(env, &lv, JNI_ABORT);
        return NULL;
    }
    enum sutra_status st = (stepwise ? sutra_session_eval_stepwise : sutra_session_eval)(
        H(sutra_session, h), (const int32_t *)tv.ptr, (size_t)tv.len, (float *)lv.ptr);
    release_ints(env, &tv, JNI_ABORT);
    release_floats(env, &lv, st == SUTRA_OK ? 0 : JNI_ABORT);
    return ok(env, st) ? out : NULL;
}

/* Session i is fed lens[i] tokens from flat (concatenated rows); returns n * n_vocab logits. */
JNIEXPORT jfloatArray FN(batchEval)(JNIEnv *env, jclass c, jlongArray handles, jintArray flat,
                                    jintArray lens, jint n_vocab) {
    (void)c;
    if (handles == NULL || flat == NULL || lens == NULL) {
        throw_invalid(env, "batchEval: sessions and tokens must not be null");
        return NULL;
    }
    jsize n = (*env)->GetArrayLength(env, handles);
    if ((*env)->GetArrayLength(env, lens) != n) {
        throw_invalid(env, "batchEval: one token row per session");
        return NULL;
    }
    if (n_vocab <= 0 || (int64_t)n * n_vocab > INT32_MAX) {
        throw_invalid(env, "batchEval: n_sessions * n_vocab does not fit a Java array");
        return NULL;
    }
    jlong *hs = (*env)->GetLongArrayElements(env, handles, NULL);
    jint *ls = hs ? (*env)->GetIntArrayElements(env, lens, NULL) : NULL;
    view tv = {NULL, NULL, 0}, lv = {NULL, NULL, 0};
    jfloatArray out = NULL;
    sutra_session **ss = calloc((size_t)n + 1, sizeof *ss);
    const int32_t **rows = calloc((size_t)n + 1, sizeof *rows);
    size_t *counts = calloc((size_t)n + 1, sizeof *counts);
    if (hs == NULL || ls == NULL || !get_ints(env, flat, &tv)) goto done;
    if (ss == NULL || rows == NULL || counts == NULL) {
        throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "batchEval: out of memory");
        goto done;
    }
    int64_t at = 0;
    for (jsize i = 0; i < n; i++) {
        if (ls[i] < 0 || at + ls[i] > tv.len) {
            throw_invalid(env, "batchEval: row lengths do not match the tokens");
            goto done;
        }
        ss[i] = H(sutra_session, hs[i]);
        rows[i] = (const int32_t *)tv.ptr + at;
        counts[i] = (size_t)ls[i];
        at += ls[i];
    }
    if (at != tv.len) {
        throw_invalid(env, "batchEval: row lengths do not match the tokens");
        goto done;
    }
    out = (*env)->NewFloatArray(env, n * n_vocab);
    if (out == NULL || !get_floats(env, out, &lv)) {
        out = NULL;
        goto done;
    }
    enum sutra_status st = sutra_batch_eval(ss, (size_t)n, rows, counts, (float *)lv.ptr);
    release_floats(env, &lv, st == SUTRA_OK ? 0 : JNI_ABORT);
    if (!ok(env, st)) out = NULL;
done:
    release_floats(env, &lv, JNI_ABORT);
    release_ints(env, &tv, JNI_ABORT);
    if (ls) (*env)->ReleaseIntArrayElements(env, lens, ls, JNI_ABORT);
    if (hs) (*env)->ReleaseLongArrayElements(env, handles, hs, JNI_ABORT);
    free(ss);
    free(rows);
    free(counts);
    return out;
}

static jbyteArray state_blob(JNIEnv *env, size_t n) {
    if (n > (size_t)INT32_MAX) {
        throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "state blob larger than a Java array (2 GiB)");
        return NULL;
    }
    return (*env)->NewByteArray(env, (jsize)n);
}

JNIEXPORT jbyteArray FN(sessionStateSave)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    size_t n = 0;
    if (!ok(env, sutra_session_state_size(H(sutra_session, h), &n))) return NULL;
    jbyteArray out = state_blob(env, n);
    view b;
    if (out == NULL || !get_bytes(env, out, &b)) return NULL;
    enum sutra_status st = sutra_session_state_save(H(sutra_session, h), (uint8_t *)b.ptr, n);
    release_bytes(env, &b, st == SUTRA_OK ? 0 : JNI_ABORT);
    return ok(env, st) ? out : NULL;
}

JNIEXPORT void FN(sessionStateLoad)(JNIEnv *env, jclass c, jlong h, jbyteArray blob) {
    (void)c;
    view b;
    if (!get_bytes(env, blob, &b)) return;
    enum sutra_status st =
        sutra_session_state_load(H(sutra_session, h), (const uint8_t *)b.ptr, (size_t)b.len);
    release_bytes(env, &b, JNI_ABORT);
    ok(env, st);
}

JNIEXPORT void FN(sessionSetAdapter)(JNIEnv *env, jclass c, jlong h, jlong adapter, jfloat scale) {
    (void)c;
    ok(env, sutra_session_set_adapter(H(sutra_session, h), H(sutra_adapter, adapter), scale));
}

JNIEXPORT void FN(sessionClearAdapters)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_session_clear_adapters(H(sutra_session, h)));
}

/* ---- tokenizer -------------------------------------------------------------------------- */

JNIEXPORT jlong FN(tokenizerLoad)(JNIEnv *env, jclass c, jbyteArray path) {
    (void)c;
    view p;
    if (!get_cstr(env, path, "path", &p)) return 0;
    sutra_tokenizer *t = NULL;
    enum sutra_status st = sutra_tokenizer_load((const char *)p.ptr, &t);
    release_bytes(env, &p, JNI_ABORT);
    return ok(env, st) ? J(t) : 0;
}

JNIEXPORT void FN(tokenizerFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_tokenizer_free(H(sutra_tokenizer, h));
}

JNIEXPORT jint FN(tokenizerNVocab)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    return sutra_tokenizer_n_vocab(H(sutra_tokenizer, h));
}

JNIEXPORT jint FN(tokenizerTokenId)(JNIEnv *env, jclass c, jlong h, jbyteArray token) {
    (void)c;
    view p;
    if (!get_cstr(env, token, "token", &p)) return -1;
    jint id = sutra_tokenizer_token_id(H(sutra_tokenizer, h), (const char *)p.ptr);
    release_bytes(env, &p, JNI_ABORT);
    return id;
}

JNIEXPORT jintArray FN(tokenize)(JNIEnv *env, jclass c, jlong h, jbyteArray text,
                                 jboolean add_special) {
    (void)c;
    view t;
    if (!get_bytes(env, text, &t)) return NULL;
    /* First try a buffer as long as the text (plus specials), then the reported size. */
    size_t cap = (size_t)t.len + 8, n = 0;
    int32_t *ids = NULL;
    enum sutra_status st = SUTRA_ERR_BUFFER_TOO_SMALL;
    for (int attempt = 0; attempt < 2 && st == SUTRA_ERR_BUFFER_TOO_SMALL; attempt++) {
        free(ids);
        ids = malloc(cap * sizeof *ids);
        if (ids == NULL) {
            release_bytes(env, &t, JNI_ABORT);
            throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "tokenize: out of memory");
            return NULL;
        }
        st = sutra_tokenize(H(sutra_tokenizer, h), (const char *)t.ptr, (size_t)t.len,
                            add_special == JNI_TRUE, ids, cap, &n);
        if (st == SUTRA_ERR_BUFFER_TOO_SMALL) cap = n;
    }
    release_bytes(env, &t, JNI_ABORT);
    jintArray out = NULL;
    if (ok(env, st)) {
        if (n > (size_t)INT32_MAX) {
            throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "tokenize: more ids than a Java array holds");
        } else if ((out = (*env)->NewIntArray(env, (jsize)n)) != NULL) {
            (*env)->SetIntArrayRegion(env, out, 0, (jsize)n, (const jint *)ids);
        }
    }
    free(ids);
    return out;
}

/* Returns the UTF-8 bytes of the ids' text. */
JNIEXPORT jbyteArray FN(detokenize)(JNIEnv *env, jclass c, jlong h, jintArray ids) {
    (void)c;
    view v;
    if (!get_ints(env, ids, &v)) return NULL;
    size_t cap = (size_t)v.len * 8 + 16, n = 0;
    char *text = NULL;
    enum sutra_status st = SUTRA_ERR_BUFFER_TOO_SMALL;
    for (int attempt = 0; attempt < 2 && st == SUTRA_ERR_BUFFER_TOO_SMALL; attempt++) {
        free(text);
        text = malloc(cap ? cap : 1);
        if (text == NULL) {
            release_ints(env, &v, JNI_ABORT);
            throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "detokenize: out of memory");
            return NULL;
        }
        st = sutra_detokenize(H(sutra_tokenizer, h), (const int32_t *)v.ptr, (size_t)v.len, text,
                              cap, &n);
        if (st == SUTRA_ERR_BUFFER_TOO_SMALL) cap = n;
    }
    release_ints(env, &v, JNI_ABORT);
    jbyteArray out = ok(env, st) ? new_bytes(env, text, n) : NULL;
    free(text);
    return out;
}

/* ---- sampler ---------------------------------------------------------------------------- */

JNIEXPORT jlong FN(samplerNew)(JNIEnv *env, jclass c, jlong seed) {
    (void)c;
    sutra_sampler *s = NULL;
    return ok(env, sutra_sampler_new((uint64_t)seed, &s)) ? J(s) : 0;
}

JNIEXPORT void FN(samplerFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_sampler_free(H(sutra_sampler, h));
}

JNIEXPORT void FN(samplerAddGreedy)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_sampler_add_greedy(H(sutra_sampler, h)));
}

JNIEXPORT void FN(samplerAddDist)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_sampler_add_dist(H(sutra_sampler, h)));
}

JNIEXPORT void FN(samplerAddTemperature)(JNIEnv *env, jclass c, jlong h, jfloat t) {
    (void)c;
    ok(env, sutra_sampler_add_temperature(H(sutra_sampler, h), t));
}

JNIEXPORT void FN(samplerAddTopK)(JNIEnv *env, jclass c, jlong h, jint k) {
    (void)c;
    ok(env, sutra_sampler_add_top_k(H(sutra_sampler, h), k));
}

JNIEXPORT void FN(samplerAddTopP)(JNIEnv *env, jclass c, jlong h, jfloat p, jint min_keep) {
    (void)c;
    if (min_keep < 0) {
        throw_invalid(env, "min_keep must not be negative");
        return;
    }
    ok(env, sutra_sampler_add_top_p(H(sutra_sampler, h), p, (size_t)min_keep));
}

JNIEXPORT void FN(samplerAddMinP)(JNIEnv *env, jclass c, jlong h, jfloat p) {
    (void)c;
    ok(env, sutra_sampler_add_min_p(H(sutra_sampler, h), p));
}

JNIEXPORT void FN(samplerAddPenalties)(JNIEnv *env, jclass c, jlong h, jint last_n,
                                       jfloat repeat, jfloat frequency, jfloat presence) {
    (void)c;
    ok(env, sutra_sampler_add_penalties(H(sutra_sampler, h), last_n, repeat, frequency, presence));
}

JNIEXPORT void FN(samplerAddRwkvPresence)(JNIEnv *env, jclass c, jlong h, jfloat presence,
                                          jfloat frequency, jfloat decay) {
    (void)c;
    ok(env, sutra_sampler_add_rwkv_presence(H(sutra_sampler, h), presence, frequency, decay));
}

JNIEXPORT void FN(samplerAddLogitBias)(JNIEnv *env, jclass c, jlong h, jintArray ids,
                                       jfloatArray bias) {
    (void)c;
    view iv, bv;
    if (!get_ints(env, ids, &iv)) return;
    if (!get_floats(env, bias, &bv)) {
        release_ints(env, &iv, JNI_ABORT);
        return;
    }
    if (iv.len != bv.len) {
        throw_invalid(env, "logitBias: ids and bias must have the same length");
    } else {
        ok(env, sutra_sampler_add_logit_bias(H(sutra_sampler, h), (const int32_t *)iv.ptr,
                                             (const float *)bv.ptr, (size_t)iv.len));
    }
    release_floats(env, &bv, JNI_ABORT);
    release_ints(env, &iv, JNI_ABORT);
}

JNIEXPORT jint FN(samplerSample)(JNIEnv *env, jclass c, jlong h, jfloatArray logits) {
    (void)c;
    view lv;
    if (!get_floats(env, logits, &lv)) return -1;
    int32_t token = -1;
    enum sutra_status st =
        sutra_sampler_sample(H(sutra_sampler, h), (const float *)lv.ptr, (size_t)lv.len, &token);
    release_floats(env, &lv, JNI_ABORT);
    return ok(env, st) ? token : -1;
}

JNIEXPORT void FN(samplerAccept)(JNIEnv *env, jclass c, jlong h, jint token) {
    (void)c;
    ok(env, sutra_sampler_accept(H(sutra_sampler, h), token));
}

JNIEXPORT void FN(samplerReset)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_sampler_reset(H(sutra_sampler, h)));
}

/* ---- generation ------------------------------------------------------------------------- */

typedef struct { JNIEnv *env; jobject sink; jmethodID piece; } gen_ctx;

/* Hands a piece to sink.piece(byte[]) (Java decodes it and calls the user's callback);
   stops generation when it returns false or throws (the exception then propagates). */
static bool on_piece(const char *piece, size_t len, void *user) {
    gen_ctx *g = (gen_ctx *)user;
    JNIEnv *env = g->env;
    if ((*env)->ExceptionCheck(env)) return false;
    if (g->sink == NULL) return true;
    jbyteArray b = new_bytes(env, piece, len);
    if (b == NULL) return false;
    jboolean go = (*env)->CallBooleanMethod(env, g->sink, g->piece, b);
    (*env)->DeleteLocalRef(env, b);
    return !(*env)->ExceptionCheck(env) && go == JNI_TRUE;
}

/* Returns {n_prompt_tokens, n_generated, stop_reason}. stops: NUL-terminated UTF-8 strings. */
JNIEXPORT jintArray FN(generate)(JNIEnv *env, jclass c, jlong session, jlong tokenizer,
                                 jlong sampler, jbyteArray prompt, jint max_tokens,
                                 jobjectArray stops, jintArray stop_tokens,
                                 jboolean add_special, jobject sink) {
    (void)c;
    gen_ctx g = {env, sink, NULL};
    if (sink != NULL) {
        jclass cls = (*env)->GetObjectClass(env, sink);
        g.piece = (*env)->GetMethodID(env, cls, "piece", "([B)Z");
        (*env)->DeleteLocalRef(env, cls);
        if (g.piece == NULL) return NULL;
    }
    jsize n_stops = stops ? (*env)->GetArrayLength(env, stops) : 0;
    jbyteArray *stop_arrays = calloc((size_t)n_stops + 1, sizeof *stop_arrays);
    view *stop_views = calloc((size_t)n_stops + 1, sizeof *stop_views);
    const char **stop_ptrs = calloc((size_t)n_stops + 1, sizeof *stop_ptrs);
    view pv = {NULL, NULL, 0}, tv = {NULL, NULL, 0};
    jintArray out = NULL;
    jsize got = 0;
    if (stop_arrays == NULL || stop_views == NULL || stop_ptrs == NULL) {
        throw_sutra(env, SUTRA_ERR_OUT_OF_MEMORY, "generate: out of memory");
        goto done;
    }
    for (; got < n_stops; got++) {
        stop_arrays[got] = (jbyteArray)(*env)->GetObjectArrayElement(env, stops, got);
        if ((*env)->ExceptionCheck(env)) goto done;
        if (!get_cstr(env, stop_arrays[got], "stop string", &stop_views[got])) goto done;
        stop_ptrs[got] = (const char *)stop_views[got].ptr;
    }
    if (!get_bytes(env, prompt, &pv) || !get_ints(env, stop_tokens, &tv)) goto done;
    sutra_generate_params p = sutra_generate_default_params();
    p.max_tokens = max_tokens;
    p.stop_strings = n_stops ? stop_ptrs : NULL;
    p.n_stop_strings = (size_t)n_stops;
    p.stop_tokens = (const int32_t *)tv.ptr;
    p.n_stop_tokens = (size_t)tv.len;
    p.add_special_tokens = add_special == JNI_TRUE;
    sutra_generate_result r = {0, 0, SUTRA_STOP_REASON_MAX_TOKENS};
    enum sutra_status st = sutra_generate(H(sutra_session, session), H(sutra_tokenizer, tokenizer),
                                          H(sutra_sampler, sampler), (const char *)pv.ptr,
                                          (size_t)pv.len, &p, on_piece, &g, &r);
    /* An exception thrown by the callback is pending: let it propagate. */
    if ((*env)->ExceptionCheck(env) || !ok(env, st)) goto done;
    out = (*env)->NewIntArray(env, 3);
    if (out != NULL) {
        jint v[3] = {r.n_prompt_tokens, r.n_generated, (jint)r.stop_reason};
        (*env)->SetIntArrayRegion(env, out, 0, 3, v);
    }
done:
    release_ints(env, &tv, JNI_ABORT);
    release_bytes(env, &pv, JNI_ABORT);
    for (jsize i = 0; i < got + 1 && i < n_stops; i++) {
        release_bytes(env, &stop_views[i], JNI_ABORT);
        if (stop_arrays[i]) (*env)->DeleteLocalRef(env, stop_arrays[i]);
    }
    free(stop_arrays);
    free(stop_views);
    free(stop_ptrs);
    return out;
}

/* ---- LoRA adapters and training --------------------------------------------------------- */

JNIEXPORT jlong FN(adapterLoad)(JNIEnv *env, jclass c, jlong model, jbyteArray path) {
    (void)c;
    view p;
    if (!get_cstr(env, path, "path", &p)) return 0;
    sutra_adapter *a = NULL;
    enum sutra_status st = sutra_adapter_load(H(sutra_model, model), (const char *)p.ptr, &a);
    release_bytes(env, &p, JNI_ABORT);
    return ok(env, st) ? J(a) : 0;
}

JNIEXPORT void FN(adapterFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_adapter_free(H(sutra_adapter, h));
}

/* ints: lora_rank, bptt_chunk, train_state; floats: lora_alpha, learning_rate, beta1, beta2,
   eps, weight_decay, grad_clip, state_learning_rate; longs: seed. */
#define TRAIN_INTS 3
#define TRAIN_FLOATS 8

JNIEXPORT void FN(trainDefaultParams)(JNIEnv *env, jclass c, jintArray ints, jfloatArray floats,
                                      jlongArray longs) {
    (void)c;
    if (ints == NULL || floats == NULL || longs == NULL ||
        (*env)->GetArrayLength(env, ints) != TRAIN_INTS ||
        (*env)->GetArrayLength(env, floats) != TRAIN_FLOATS ||
        (*env)->GetArrayLength(env, longs) != 1) {
        throw_invalid(env, "trainDefaultParams: wrong array sizes");
        return;
    }
    sutra_train_params p = sutra_train_default_params();
    jint i[TRAIN_INTS] = {p.lora_rank, p.bptt_chunk, p.train_state};
    jfloat f[TRAIN_FLOATS] = {p.lora_alpha, p.learning_rate, p.beta1, p.beta2,
                              p.eps, p.weight_decay, p.grad_clip, p.state_learning_rate};
    jlong l[1] = {(jlong)p.seed};
    (*env)->SetIntArrayRegion(env, ints, 0, TRAIN_INTS, i);
    (*env)->SetFloatArrayRegion(env, floats, 0, TRAIN_FLOATS, f);
    (*env)->SetLongArrayRegion(env, longs, 0, 1, l);
}

JNIEXPORT jlong FN(trainerNew)(JNIEnv *env, jclass c, jlong model, jlong init, jintArray ints,
                               jfloatArray floats, jlong seed, jbyteArray target_modules) {
    (void)c;
    if (ints == NULL || floats == NULL || (*env)->GetArrayLength(env, ints) != TRAIN_INTS ||
        (*env)->GetArrayLength(env, floats) != TRAIN_FLOATS) {
        throw_invalid(env, "trainerNew: wrong array sizes");
        return 0;
    }
    jint i[TRAIN_INTS];
    jfloat f[TRAIN_FLOATS];
    (*env)->GetIntArrayRegion(env, ints, 0, TRAIN_INTS, i);
    (*env)->GetFloatArrayRegion(env, floats, 0, TRAIN_FLOATS, f);
    view tm;
    if (!get_cstr(env, target_modules, "target_modules", &tm)) return 0;
    sutra_train_params p = sutra_train_default_params();
    p.lora_rank = i[0];
    p.bptt_chunk = i[1];
    p.train_state = i[2];
    p.lora_alpha = f[0];
    p.learning_rate = f[1];
    p.beta1 = f[2];
    p.beta2 = f[3];
    p.eps = f[4];
    p.weight_decay = f[5];
    p.grad_clip = f[6];
    p.state_learning_rate = f[7];
    p.seed = (uint64_t)seed;
    p.target_modules = (const char *)tm.ptr;
    sutra_trainer *t = NULL;
    enum sutra_status st =
        sutra_trainer_new(H(sutra_model, model), H(sutra_adapter, init), &p, &t);
    release_bytes(env, &tm, JNI_ABORT);
    return ok(env, st) ? J(t) : 0;
}

JNIEXPORT void FN(trainerFree)(JNIEnv *env, jclass c, jlong h) {
    (void)env; (void)c;
    sutra_trainer_free(H(sutra_trainer, h));
}

/* sutra_trainer_step (apply) or sutra_trainer_compute; returns the loss. */
JNIEXPORT jfloat FN(trainerStep)(JNIEnv *env, jclass c, jlong h, jintArray tokens,
                                 jintArray targets, jint n_rows, jint n_tokens, jboolean apply) {
    (void)c;
    view tv, gv;
    if (!get_ints(env, tokens, &tv)) return 0;
    if (!get_ints(env, targets, &gv)) {
        release_ints(env, &tv, JNI_ABORT);
        return 0;
    }
    float loss = 0;
    int64_t want = (int64_t)n_rows * (int64_t)n_tokens;
    if (n_rows < 0 || n_tokens < 0) {
        throw_invalid(env, "n_rows and n_tokens must not be negative");
    } else if ((tokens != NULL && tv.len != want) || (targets != NULL && gv.len != want)) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "tokens and targets must hold n_rows * n_tokens = %lld ids (got %d and %d)",
                 (long long)want, (int)tv.len, (int)gv.len);
        throw_invalid(env, msg);
    } else {
        ok(env, (apply ? sutra_trainer_step : sutra_trainer_compute)(
                    H(sutra_trainer, h), (const int32_t *)tv.ptr, (const int32_t *)gv.ptr,
                    (size_t)n_rows, (size_t)n_tokens, &loss));
    }
    release_ints(env, &gv, JNI_ABORT);
    release_ints(env, &tv, JNI_ABORT);
    return loss;
}

JNIEXPORT void FN(trainerApply)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    ok(env, sutra_trainer_apply(H(sutra_trainer, h)));
}

JNIEXPORT jfloatArray FN(trainerGradient)(JNIEnv *env, jclass c, jlong h, jbyteArray name,
                                          jint n) {
    (void)c;
    if (n < 0) {
        throw_invalid(env, "n must not be negative");
        return NULL;
    }
    view nv, ov;
    if (!get_cstr(env, name, "name", &nv)) return NULL;
    jfloatArray out = (*env)->NewFloatArray(env, n);
    if (out == NULL || !get_floats(env, out, &ov)) {
        release_bytes(env, &nv, JNI_ABORT);
        return NULL;
    }
    enum sutra_status st = sutra_trainer_get_gradient(H(sutra_trainer, h), (const char *)nv.ptr,
                                                      (float *)ov.ptr, (size_t)n);
    release_floats(env, &ov, st == SUTRA_OK ? 0 : JNI_ABORT);
    release_bytes(env, &nv, JNI_ABORT);
    return ok(env, st) ? out : NULL;
}

JNIEXPORT jlong FN(trainerGetAdapter)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    sutra_adapter *a = NULL;
    return ok(env, sutra_trainer_get_adapter(H(sutra_trainer, h), &a)) ? J(a) : 0;
}

JNIEXPORT void FN(trainerSaveAdapter)(JNIEnv *env, jclass c, jlong h, jbyteArray dir) {
    (void)c;
    view d;
    if (!get_cstr(env, dir, "dir", &d)) return;
    enum sutra_status st = sutra_trainer_save_adapter(H(sutra_trainer, h), (const char *)d.ptr);
    release_bytes(env, &d, JNI_ABORT);
    ok(env, st);
}

JNIEXPORT jbyteArray FN(trainerGetState)(JNIEnv *env, jclass c, jlong h) {
    (void)c;
    size_t n = 0;
    if (!ok(env, sutra_trainer_state_size(H(sutra_trainer, h), &n))) return NULL;
    jbyteArray out = state_blob(env, n);
    view b;
    if (out == NULL || !get_bytes(env, out, &b)) return NULL;
    enum sutra_status st = sutra_trainer_get_state(H(sutra_trainer, h), (uint8_t *)b.ptr, n);
    release_bytes(env, &b, st == SUTRA_OK ? 0 : JNI_ABORT);
    return ok(env, st) ? out : NULL;
}

JNIEXPORT void FN(trainerSetState)(JNIEnv *env, jclass c, jlong h, jbyteArray blob) {
    (void)c;
    view b;
    if (!get_bytes(env, blob, &b)) return;
    enum sutra_status st =
        sutra_trainer_set_state(H(sutra_trainer, h), (const uint8_t *)b.ptr, (size_t)b.len);
    release_bytes(env, &b, JNI_ABORT);
    ok(env, st);
}
