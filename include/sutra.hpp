// sutra.hpp: C++17 wrappers of libsutra's C API (include/sutra.h). Header-only: include it
// and link libsutra (-lsutra, or the CMake target sutra::sutra).
//
// Every handle is an RAII, move-only object that frees what it owns; every failed call
// throws sutra::Error, which carries the sutra_status and the message of sutra_last_error().
// Threading is the C API's: a Model, Tokenizer and Adapter may be shared by threads; a
// Session, Sampler and Trainer are used by one thread at a time.
//
//   sutra::Model model("model.safetensors");
//   sutra::Tokenizer tokenizer("tokenizer.json");
//   sutra::Session session(model);
//   auto sampler = sutra::Sampler(42).top_p(0.9f).temperature(0.8f).dist();
//   sutra::generate(session, tokenizer, sampler, "ROMEO:\n", {}, [](std::string_view piece) {
//       std::cout << piece;
//   });
#ifndef SUTRA_HPP
#define SUTRA_HPP

#include "sutra.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

namespace sutra {

/// A failed libsutra call: status() is the C status code, message() the library's message
/// (sutra_last_error() at the time of the failure), what() "<call>: <STATUS_NAME>: <message>".
class Error : public std::runtime_error {
public:
    Error(sutra_status status, std::string call, std::string message)
        : std::runtime_error(call + ": " + sutra_status_name(static_cast<int32_t>(status)) + ": " + message),
          status_(status),
          message_(std::move(message)) {}

    /// The status code (SUTRA_ERR_IO, ...).
    sutra_status status() const noexcept { return status_; }
    /// Its name ("SUTRA_ERR_IO", ...).
    const char *status_name() const noexcept { return sutra_status_name(static_cast<int32_t>(status_)); }
    /// The library's message, naming the file, argument or value at fault.
    const std::string &message() const noexcept { return message_; }

private:
    sutra_status status_;
    std::string message_;
};

namespace detail {

/// Throws sutra::Error for a status other than SUTRA_OK.
inline void check(sutra_status status, const char *call) {
    if (status != SUTRA_OK) throw Error(status, call, sutra_last_error());
}

/// An error found by the wrapper before calling the library.
[[noreturn]] inline void invalid(const char *call, const std::string &message) {
    throw Error(SUTRA_ERR_INVALID_ARGUMENT, call, message);
}

/// Owns one handle of the C API, released by `Free` (which accepts NULL).
template <class T, void (*Free)(T *)>
class Handle {
public:
    Handle() noexcept = default;
    explicit Handle(T *p) noexcept : p_(p) {}
    Handle(Handle &&other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
    Handle &operator=(Handle &&other) noexcept {
        if (this != &other) {
            Free(p_);
            p_ = std::exchange(other.p_, nullptr);
        }
        return *this;
    }
    Handle(const Handle &) = delete;
    Handle &operator=(const Handle &) = delete;
    ~Handle() { Free(p_); }

    T *get() const noexcept { return p_; }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    T *p_ = nullptr;
};

/// The library wants NUL-terminated paths and names.
inline std::string c_string(std::string_view s) { return std::string(s); }

}  // namespace detail

/// The library version ("0.1.0").
inline const char *version() noexcept { return sutra_version(); }
/// The CPU features found and the kernel path chosen.
inline const char *system_info() noexcept { return sutra_system_info(); }

class Session;
class Adapter;
class Trainer;

/// A loaded model: immutable, shareable by threads. Sessions keep its weights alive.
class Model {
public:
    /// Default load parameters (all cores, mmap on).
    static sutra_model_params default_params() noexcept { return sutra_model_default_params(); }

    /// Loads a checkpoint (safetensors, architecture detected).
    explicit Model(std::string_view path) : Model(path, default_params()) {}
    /// Loads a checkpoint with `params` (threads, mmap, progress callback, ...).
    Model(std::string_view path, const sutra_model_params &params) {
        sutra_model *m = nullptr;
        detail::check(sutra_model_load(detail::c_string(path).c_str(), &params, &m), "sutra_model_load");
        h_ = Handle(m);
    }
    /// Loads a checkpoint from `len` bytes (copied).
    static Model from_memory(const void *data, size_t len, const sutra_model_params &params = default_params()) {
        sutra_model *m = nullptr;
        detail::check(sutra_model_load_from_memory(static_cast<const uint8_t *>(data), len, &params, &m),
                      "sutra_model_load_from_memory");
        return Model(m);
    }

    /// Vocabulary size.
    int32_t n_vocab() const noexcept { return sutra_model_n_vocab(h_.get()); }
    /// Architecture and sizes.
    sutra_model_info info() const {
        sutra_model_info info{};
        detail::check(sutra_model_get_info(h_.get(), &info), "sutra_model_get_info");
        return info;
    }
    /// The C handle (still owned by this object).
    const sutra_model *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_model, sutra_model_free>;
    explicit Model(sutra_model *m) noexcept : h_(m) {}
    Handle h_;
};

/// A LoRA adapter (PEFT folder or file) for one model: immutable, shareable.
class Adapter {
public:
    /// Loads the adapter at `path` for `model`.
    Adapter(const Model &model, std::string_view path) {
        sutra_adapter *a = nullptr;
        detail::check(sutra_adapter_load(model.get(), detail::c_string(path).c_str(), &a), "sutra_adapter_load");
        h_ = Handle(a);
    }
    /// Takes ownership of a handle from the C API.
    explicit Adapter(sutra_adapter *owned) noexcept : h_(owned) {}
    /// The C handle (still owned by this object).
    const sutra_adapter *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_adapter, sutra_adapter_free>;
    Handle h_;
};

/// One sequence's recurrent state. Used by one thread at a time.
class Session {
public:
    /// A session at the initial state of `model`.
    explicit Session(const Model &model) : n_vocab_(model.n_vocab()) {
        sutra_session *s = nullptr;
        detail::check(sutra_session_new(model.get(), &s), "sutra_session_new");
        h_ = Handle(s);
    }

    /// Vocabulary size of the model (the length of the logits).
    size_t n_vocab() const noexcept { return n_vocab_; }

    /// Feeds `n` tokens; `logits_out` (NULL or n_vocab() floats) receives the logits after
    /// the last one.
    void eval(const int32_t *tokens, size_t n, float *logits_out) {
        detail::check(sutra_session_eval(h_.get(), tokens, n, logits_out), "sutra_session_eval");
    }
    /// Feeds `n` tokens and returns the logits after the last one.
    std::vector<float> eval(const int32_t *tokens, size_t n) {
        std::vector<float> logits(n_vocab_);
        eval(tokens, n, logits.data());
        return logits;
    }
    /// Feeds `tokens` and returns the logits after the last one.
    std::vector<float> eval(const std::vector<int32_t> &tokens) { return eval(tokens.data(), tokens.size()); }
    /// Feeds `tokens` and returns the logits after the last one.
    std::vector<float> eval(std::initializer_list<int32_t> tokens) { return eval(tokens.begin(), tokens.size()); }
    /// Feeds `tokens` one at a time (the single-token path); returns the last logits.
    std::vector<float> eval_stepwise(const std::vector<int32_t> &tokens) {
        std::vector<float> logits(n_vocab_);
        detail::check(sutra_session_eval_stepwise(h_.get(), tokens.data(), tokens.size(), logits.data()),
                      "sutra_session_eval_stepwise");
        return logits;
    }
    /// Feeds `tokens` without computing logits.
    void feed(const std::vector<int32_t> &tokens) { eval(tokens.data(), tokens.size(), nullptr); }
#if __cplusplus >= 202002L
    /// Feeds `tokens` and returns the logits after the last one.
    std::vector<float> eval(std::span<const int32_t> tokens) { return eval(tokens.data(), tokens.size()); }
    /// Feeds `tokens`; `logits` (empty, or n_vocab() floats) receives the last logits.
    void eval(std::span<const int32_t> tokens, std::span<float> logits) {
        if (!logits.empty() && logits.size() != n_vocab_)
            detail::invalid("sutra_session_eval", "logits: " + std::to_string(logits.size()) + " floats for a vocabulary of " +
                                                      std::to_string(n_vocab_));
        eval(tokens.data(), tokens.size(), logits.empty() ? nullptr : logits.data());
    }
#endif

    /// Back to the initial state.
    void reset() { detail::check(sutra_session_reset(h_.get()), "sutra_session_reset"); }
    /// A new session with a copy of this one's state (and adapters).
    Session clone() const {
        sutra_session *s = nullptr;
        detail::check(sutra_session_clone(h_.get(), &s), "sutra_session_clone");
        return Session(s, n_vocab_);
    }

    /// The state as a blob (versioned, checksummed; adapters not included).
    std::vector<uint8_t> save_state() const {
        size_t n = 0;
        detail::check(sutra_session_state_size(h_.get(), &n), "sutra_session_state_size");
        std::vector<uint8_t> blob(n);
        detail::check(sutra_session_state_save(h_.get(), blob.data(), blob.size()), "sutra_session_state_save");
        return blob;
    }
    /// Restores a blob of save_state() (SUTRA_ERR_FORMAT for a foreign or corrupted one; the
    /// session is then unchanged).
    void load_state(const uint8_t *blob, size_t len) {
        detail::check(sutra_session_state_load(h_.get(), blob, len), "sutra_session_state_load");
    }
    /// Restores a blob of save_state().
    void load_state(const std::vector<uint8_t> &blob) { load_state(blob.data(), blob.size()); }

    /// Computes with `adapter` at `scale` from the next eval on (0 detaches it).
    void set_adapter(const Adapter &adapter, float scale = 1.0f) {
        detail::check(sutra_session_set_adapter(h_.get(), adapter.get(), scale), "sutra_session_set_adapter");
    }
    /// Detaches every adapter.
    void clear_adapters() { detail::check(sutra_session_clear_adapters(h_.get()), "sutra_session_clear_adapters"); }

    /// The C handle (still owned by this object).
    sutra_session *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_session, sutra_session_free>;
    Session(sutra_session *s, size_t n_vocab) noexcept : h_(s), n_vocab_(n_vocab) {}
    Handle h_;
    size_t n_vocab_ = 0;
};

/// Advances `sessions` (of one model) in one pass, session i fed `tokens[i]`; returns
/// sessions.size() rows of n_vocab logits, row-major. On error no session is changed.
inline std::vector<float> batch_eval(const std::vector<Session *> &sessions,
                                     const std::vector<std::vector<int32_t>> &tokens) {
    if (sessions.size() != tokens.size())
        detail::invalid("sutra_batch_eval", "tokens: " + std::to_string(tokens.size()) + " lists for " +
                                                std::to_string(sessions.size()) + " sessions");
    std::vector<sutra_session *> handles;
    std::vector<const int32_t *> ptrs;
    std::vector<size_t> lens;
    for (size_t i = 0; i < sessions.size(); i++) {
        if (sessions[i] == nullptr) detail::invalid("sutra_batch_eval", "sessions[" + std::to_string(i) + "] is NULL");
        handles.push_back(sessions[i]->get());
        ptrs.push_back(tokens[i].data());
        lens.push_back(tokens[i].size());
    }
    std::vector<float> logits(sessions.empty() ? 0 : sessions.size() * sessions[0]->n_vocab());
    detail::check(sutra_batch_eval(handles.data(), handles.size(), ptrs.data(), lens.data(),
                                   logits.empty() ? nullptr : logits.data()),
                  "sutra_batch_eval");
    return logits;
}

/// A tokenizer (tokenizer.json or an RWKV world vocabulary): immutable, shareable.
class Tokenizer {
public:
    /// Loads the tokenizer at `path`.
    explicit Tokenizer(std::string_view path) {
        sutra_tokenizer *t = nullptr;
        detail::check(sutra_tokenizer_load(detail::c_string(path).c_str(), &t), "sutra_tokenizer_load");
        h_ = Handle(t);
    }

    /// Token ids of UTF-8 `text` (invalid UTF-8 throws SUTRA_ERR_INVALID_ARGUMENT).
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const {
        std::vector<int32_t> ids(text.size() + 16);
        size_t n = 0;
        sutra_status st = sutra_tokenize(h_.get(), text.data(), text.size(), add_special_tokens, ids.data(), ids.size(), &n);
        if (st == SUTRA_ERR_BUFFER_TOO_SMALL) {
            ids.resize(n);
            st = sutra_tokenize(h_.get(), text.data(), text.size(), add_special_tokens, ids.data(), ids.size(), &n);
        }
        detail::check(st, "sutra_tokenize");
        ids.resize(n);
        return ids;
    }
    /// The UTF-8 text of `ids` (bytes that are no valid UTF-8 become U+FFFD).
    std::string decode(const std::vector<int32_t> &ids) const {
        std::string text(ids.size() * 8 + 16, '\0');
        size_t n = 0;
        sutra_status st = sutra_detokenize(h_.get(), ids.data(), ids.size(), text.data(), text.size(), &n);
        if (st == SUTRA_ERR_BUFFER_TOO_SMALL) {
            text.resize(n);
            st = sutra_detokenize(h_.get(), ids.data(), ids.size(), text.data(), text.size(), &n);
        }
        detail::check(st, "sutra_detokenize");
        text.resize(n);
        return text;
    }
    /// The id of the token spelled `token`, or -1.
    int32_t token_id(std::string_view token) const noexcept {
        return sutra_tokenizer_token_id(h_.get(), std::string(token).c_str());
    }
    /// Number of token ids.
    int32_t n_vocab() const noexcept { return sutra_tokenizer_n_vocab(h_.get()); }
    /// The C handle (still owned by this object).
    const sutra_tokenizer *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_tokenizer, sutra_tokenizer_free>;
    Handle h_;
};

// A builder stage: on an lvalue it returns the sampler itself, on a temporary a new sampler
// (moved), so that `auto s = sutra::Sampler(42).top_k(40).dist();` works.
#define SUTRA_HPP_STAGE(name, params, call)                                \
    Sampler &name params & {                                               \
        detail::check(call, "sutra_sampler_add_" #name);                   \
        return *this;                                                      \
    }                                                                      \
    Sampler name params && {                                               \
        detail::check(call, "sutra_sampler_add_" #name);                   \
        return std::move(*this);                                           \
    }

/// A sampler chain: stages applied in the order added, a seeded generator, the history of
/// accepted tokens. Used by one thread at a time.
class Sampler {
public:
    /// An empty chain drawing with `seed`.
    explicit Sampler(uint64_t seed) {
        sutra_sampler *s = nullptr;
        detail::check(sutra_sampler_new(seed, &s), "sutra_sampler_new");
        h_ = Handle(s);
    }

    SUTRA_HPP_STAGE(greedy, (), sutra_sampler_add_greedy(h_.get()))
    SUTRA_HPP_STAGE(dist, (), sutra_sampler_add_dist(h_.get()))
    SUTRA_HPP_STAGE(temperature, (float t), sutra_sampler_add_temperature(h_.get(), t))
    SUTRA_HPP_STAGE(top_k, (int32_t k), sutra_sampler_add_top_k(h_.get(), k))
    SUTRA_HPP_STAGE(top_p, (float p, size_t min_keep = 1), sutra_sampler_add_top_p(h_.get(), p, min_keep))
    SUTRA_HPP_STAGE(min_p, (float p), sutra_sampler_add_min_p(h_.get(), p))
    SUTRA_HPP_STAGE(penalties, (int32_t last_n, float repeat, float frequency, float presence),
                    sutra_sampler_add_penalties(h_.get(), last_n, repeat, frequency, presence))
    SUTRA_HPP_STAGE(rwkv_presence, (float presence, float frequency, float decay),
                    sutra_sampler_add_rwkv_presence(h_.get(), presence, frequency, decay))
    SUTRA_HPP_STAGE(logit_bias, (const std::vector<int32_t> &ids, const std::vector<float> &bias),
                    add_logit_bias(h_.get(), ids, bias))

    /// Picks a token from `n_vocab` logits (does not accept it).
    int32_t sample(const float *logits, size_t n_vocab) {
        int32_t token = -1;
        detail::check(sutra_sampler_sample(h_.get(), logits, n_vocab, &token), "sutra_sampler_sample");
        return token;
    }
    /// Picks a token from `logits` (does not accept it).
    int32_t sample(const std::vector<float> &logits) { return sample(logits.data(), logits.size()); }
    /// Records `token` as generated, for the penalties.
    void accept(int32_t token) { detail::check(sutra_sampler_accept(h_.get(), token), "sutra_sampler_accept"); }
    /// Clears the history and restarts the generator from the seed.
    void reset() { detail::check(sutra_sampler_reset(h_.get()), "sutra_sampler_reset"); }
    /// The C handle (still owned by this object).
    sutra_sampler *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_sampler, sutra_sampler_free>;
    static sutra_status add_logit_bias(sutra_sampler *s, const std::vector<int32_t> &ids, const std::vector<float> &bias) {
        if (ids.size() != bias.size())
            detail::invalid("sutra_sampler_add_logit_bias",
                            "bias: " + std::to_string(bias.size()) + " values for " + std::to_string(ids.size()) + " ids");
        return sutra_sampler_add_logit_bias(s, ids.data(), bias.data(), ids.size());
    }
    Handle h_;
};

#undef SUTRA_HPP_STAGE

/// What generate() should do.
struct GenerateParams {
    /// Most tokens to generate.
    int32_t max_tokens = 128;
    /// Strings that end generation (not emitted).
    std::vector<std::string> stop_strings;
    /// Token ids that end generation (not emitted, not fed).
    std::vector<int32_t> stop_tokens;
    /// Apply the tokenizer's special-token template to the prompt.
    bool add_special_tokens = false;
};

namespace detail {
template <class F>
struct PieceSink {
    F *f;
    std::exception_ptr error;
    static bool call(const char *piece, size_t len, void *user_data) {
        auto *self = static_cast<PieceSink *>(user_data);
        // An exception must not unwind through the library: it is kept and rethrown after.
        try {
            std::string_view text(piece, len);
            if constexpr (std::is_void_v<std::invoke_result_t<F &, std::string_view>>) {
                (*self->f)(text);
                return true;
            } else {
                return static_cast<bool>((*self->f)(text));
            }
        } catch (...) {
            self->error = std::current_exception();
            return false;
        }
    }
};
}  // namespace detail

/// Feeds `prompt` to `session`, then samples up to params.max_tokens tokens with `sampler`,
/// feeding each back and passing the text to `on_piece(std::string_view)` in whole UTF-8
/// characters. `on_piece` returns void, or bool (false stops). An exception thrown by
/// `on_piece` stops generation and is rethrown here. The session keeps the state after the
/// last fed token.
template <class F>
sutra_generate_result generate(Session &session, const Tokenizer &tokenizer, Sampler &sampler, std::string_view prompt,
                               const GenerateParams &params, F &&on_piece) {
    std::vector<const char *> stops;
    for (const std::string &s : params.stop_strings) stops.push_back(s.c_str());
    sutra_generate_params p = sutra_generate_default_params();
    p.max_tokens = params.max_tokens;
    p.stop_strings = stops.empty() ? nullptr : stops.data();
    p.n_stop_strings = stops.size();
    p.stop_tokens = params.stop_tokens.empty() ? nullptr : params.stop_tokens.data();
    p.n_stop_tokens = params.stop_tokens.size();
    p.add_special_tokens = params.add_special_tokens;
    using Fn = std::remove_reference_t<F>;
    detail::PieceSink<Fn> sink{&on_piece, nullptr};
    sutra_generate_result result{};
    sutra_status st = sutra_generate(session.get(), tokenizer.get(), sampler.get(), prompt.data(), prompt.size(), &p,
                                     &detail::PieceSink<Fn>::call, &sink, &result);
    if (sink.error) std::rethrow_exception(sink.error);
    detail::check(st, "sutra_generate");
    return result;
}

/// generate() returning the generated text.
inline std::string generate(Session &session, const Tokenizer &tokenizer, Sampler &sampler, std::string_view prompt,
                            const GenerateParams &params = {}) {
    std::string text;
    generate(session, tokenizer, sampler, prompt, params, [&text](std::string_view piece) { text += piece; });
    return text;
}

/// Trains a LoRA adapter (and/or the initial state) over a frozen model. One thread at a time.
class Trainer {
public:
    /// Default hyper-parameters.
    static sutra_train_params default_params() noexcept { return sutra_train_default_params(); }

    /// A new adapter from `params`.
    explicit Trainer(const Model &model, const sutra_train_params &params = default_params())
        : Trainer(model, nullptr, params) {}
    /// Training from a copy of `init` (which never changes).
    Trainer(const Model &model, const Adapter &init, const sutra_train_params &params = default_params())
        : Trainer(model, &init, params) {}

    /// Mean cross-entropy of a batch (`tokens` and `targets`: n_rows rows, row-major; a
    /// negative target is ignored); keeps the gradient for apply().
    float compute(const std::vector<int32_t> &tokens, const std::vector<int32_t> &targets, size_t n_rows = 1) {
        size_t n_tokens = row_length(tokens, targets, n_rows, "sutra_trainer_compute");
        float loss = 0;
        detail::check(sutra_trainer_compute(h_.get(), tokens.data(), targets.data(), n_rows, n_tokens, &loss),
                      "sutra_trainer_compute");
        return loss;
    }
    /// One optimizer step with the last computed gradient.
    void apply() { detail::check(sutra_trainer_apply(h_.get()), "sutra_trainer_apply"); }
    /// compute(), then apply(); returns the loss.
    float step(const std::vector<int32_t> &tokens, const std::vector<int32_t> &targets, size_t n_rows = 1) {
        size_t n_tokens = row_length(tokens, targets, n_rows, "sutra_trainer_step");
        float loss = 0;
        detail::check(sutra_trainer_step(h_.get(), tokens.data(), targets.data(), n_rows, n_tokens, &loss),
                      "sutra_trainer_step");
        return loss;
    }
    /// The last gradient of one adapter tensor (PEFT name), `n` elements.
    std::vector<float> gradient(std::string_view name, size_t n) const {
        std::vector<float> g(n);
        detail::check(sutra_trainer_get_gradient(h_.get(), detail::c_string(name).c_str(), g.data(), n),
                      "sutra_trainer_get_gradient");
        return g;
    }
    /// A snapshot of the current adapter, for sessions.
    Adapter adapter() const {
        sutra_adapter *a = nullptr;
        detail::check(sutra_trainer_get_adapter(h_.get(), &a), "sutra_trainer_get_adapter");
        return Adapter(a);
    }
    /// Writes the adapter as a PEFT folder.
    void save(std::string_view dir) const {
        detail::check(sutra_trainer_save_adapter(h_.get(), detail::c_string(dir).c_str()), "sutra_trainer_save_adapter");
    }
    /// The initial state rows start from, as a state blob (Session::load_state reads it).
    std::vector<uint8_t> state() const {
        size_t n = 0;
        detail::check(sutra_trainer_state_size(h_.get(), &n), "sutra_trainer_state_size");
        std::vector<uint8_t> blob(n);
        detail::check(sutra_trainer_get_state(h_.get(), blob.data(), blob.size()), "sutra_trainer_get_state");
        return blob;
    }
    /// Starts every row from the state in `blob`.
    void set_state(const std::vector<uint8_t> &blob) {
        detail::check(sutra_trainer_set_state(h_.get(), blob.data(), blob.size()), "sutra_trainer_set_state");
    }
    /// The C handle (still owned by this object).
    sutra_trainer *get() const noexcept { return h_.get(); }

private:
    using Handle = detail::Handle<sutra_trainer, sutra_trainer_free>;
    Trainer(const Model &model, const Adapter *init, const sutra_train_params &params) {
        sutra_trainer *t = nullptr;
        detail::check(sutra_trainer_new(model.get(), init ? init->get() : nullptr, &params, &t), "sutra_trainer_new");
        h_ = Handle(t);
    }
    static size_t row_length(const std::vector<int32_t> &tokens, const std::vector<int32_t> &targets, size_t n_rows,
                             const char *call) {
        if (targets.size() != tokens.size())
            detail::invalid(call, "targets: " + std::to_string(targets.size()) + " for " + std::to_string(tokens.size()) +
                                      " tokens");
        if (n_rows == 0 || tokens.size() % n_rows != 0)
            detail::invalid(call, "n_rows: " + std::to_string(n_rows) + " does not divide " +
                                      std::to_string(tokens.size()) + " tokens");
        return tokens.size() / n_rows;
    }
    Handle h_;
};

}  // namespace sutra

#endif  // SUTRA_HPP
