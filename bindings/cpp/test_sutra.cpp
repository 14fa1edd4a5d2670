// Checks of include/sutra.hpp against the bundled model, run by tests/cpp_binding.rs:
//
//   test_sutra MODEL TOKENIZER
//
// Prints what the Rust test compares with the Rust API (the seeded text), then
// "cpp binding ok: N checks"; a failed check prints "FAIL <line>: <what>" and exits 1.
#include "sutra.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <type_traits>
#include <vector>

static int checks = 0;
static int failures = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            std::cout << "FAIL " << __LINE__ << ": " << #cond << std::endl; \
        }                                                                    \
    } while (0)

static_assert(!std::is_copy_constructible_v<sutra::Model>, "handles are move-only");
static_assert(!std::is_copy_assignable_v<sutra::Session>, "handles are move-only");
static_assert(std::is_nothrow_move_constructible_v<sutra::Session>, "handles move without throwing");
static_assert(std::is_nothrow_move_assignable_v<sutra::Tokenizer>, "handles move without throwing");
static_assert(std::is_base_of_v<std::runtime_error, sutra::Error>, "sutra::Error is a std::runtime_error");

static bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && !a.empty() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

static float max_diff(const std::vector<float> &a, const std::vector<float> &b, size_t offset = 0) {
    float d = 0;
    for (size_t i = 0; i < a.size(); i++) d = std::fmax(d, std::fabs(a[i] - b[offset + i]));
    return d;
}

static size_t argmax(const std::vector<float> &v) {
    size_t best = 0;
    for (size_t i = 1; i < v.size(); i++)
        if (v[i] > v[best]) best = i;
    return best;
}

// The demo's settings (examples-c/generate.c): top-p 0.9, temperature 0.8.
static std::string seeded_text(const sutra::Model &model, const sutra::Tokenizer &tok, int32_t eot) {
    sutra::Session session(model);
    auto sampler = sutra::Sampler(42).top_p(0.9f).temperature(0.8f).dist();
    sutra::GenerateParams params;
    params.max_tokens = 40;
    if (eot >= 0) params.stop_tokens.push_back(eot);
    return sutra::generate(session, tok, sampler, "ROMEO:\n", params);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        std::cerr << "usage: " << argv[0] << " MODEL TOKENIZER\n";
        return 2;
    }
    try {
        CHECK(std::string(sutra::version()) == SUTRA_VERSION);
        sutra::Model loaded(argv[1]);
        sutra::Model model = std::move(loaded);  // moved: the handle goes with it
        sutra::Tokenizer tok(argv[2]);
        CHECK(model.n_vocab() > 0 && model.info().n_layer > 0);

        // Tokenizer round trip.
        const std::string line = "ROMEO:\nWhat say'st thou, my dear nurse?";
        std::vector<int32_t> ids = tok.encode(line);
        CHECK(!ids.empty() && ids.size() < line.size());
        CHECK(tok.decode(ids) == line);
        CHECK(tok.encode("").empty() && tok.decode({}).empty());

        // Seeded generation: the same text twice (the Rust test compares it with the Rust API).
        int32_t eot = tok.token_id("<|endoftext|>");
        std::string text = seeded_text(model, tok, eot);
        CHECK(text.size() > 20);
        CHECK(seeded_text(model, tok, eot) == text);
        std::cout << "eot " << eot << "\n---text---\n" << text << "\n---end---\n";

        // The callback: false stops; an exception comes back out of generate().
        {
            sutra::Session s(model);
            sutra::Sampler greedy(1);
            greedy.greedy();
            int pieces = 0;
            sutra::GenerateParams p;
            p.max_tokens = 30;
            sutra_generate_result r = sutra::generate(s, tok, greedy, "ROMEO:\n", p, [&pieces](std::string_view) {
                return ++pieces < 3;
            });
            CHECK(r.stop_reason == SUTRA_STOP_REASON_CALLBACK && pieces == 3 && r.n_prompt_tokens > 0);
            bool thrown = false;
            try {
                sutra::generate(s, tok, greedy, "more", p, [](std::string_view) -> bool {
                    throw std::logic_error("stop from the callback");
                });
            } catch (const std::logic_error &e) {
                thrown = std::string(e.what()) == "stop from the callback";
            }
            CHECK(thrown);
            CHECK(s.eval({1, 2}).size() == static_cast<size_t>(model.n_vocab()));  // still usable
        }

        // State: save, advance, restore, advance again: the same logits, bit for bit.
        sutra::Session session(model);
        std::vector<float> first = session.eval(ids);
        std::vector<uint8_t> blob = session.save_state();
        CHECK(!blob.empty());
        const std::vector<int32_t> more = tok.encode(" I will tell thee");
        std::vector<float> a = session.eval(more);
        session.load_state(blob);
        std::vector<float> b = session.eval(more);
        CHECK(same_bits(a, b));
        CHECK(!same_bits(first, a));
        session.load_state(blob);
        sutra::Session copy = session.clone();
        CHECK(same_bits(copy.eval(more), a));
        CHECK(max_diff(session.eval_stepwise(more), a) < 1e-3f);
        session.reset();
        CHECK(same_bits(session.eval(ids), first));
#if __cplusplus >= 202002L
        {
            sutra::Session s(model);
            std::vector<float> out(first.size());
            s.eval(std::span<const int32_t>(ids), std::span<float>(out));
            CHECK(same_bits(out, first));
            std::cout << "c++20 span overloads checked\n";
        }
#endif

        // A corrupted blob: SUTRA_ERR_FORMAT, the session unchanged.
        {
            std::vector<uint8_t> bad = blob;
            bad[bad.size() / 2] ^= 0x5a;
            sutra::Session s = session.clone();
            bool format = false;
            try {
                s.load_state(bad);
            } catch (const sutra::Error &e) {
                format = e.status() == SUTRA_ERR_FORMAT && !e.message().empty();
            }
            CHECK(format);
            sutra::Session ref = session.clone();
            CHECK(same_bits(s.eval(more), ref.eval(more)));
        }

        // Batch eval: the same as separate evals (to float rounding).
        {
            sutra::Session s1(model), s2(model);
            const std::vector<int32_t> t2 = tok.encode("JULIET:\nO");
            std::vector<float> rows = sutra::batch_eval({&s1, &s2}, {ids, t2});
            sutra::Session r1(model), r2(model);
            std::vector<float> l1 = r1.eval(ids), l2 = r2.eval(t2);
            CHECK(rows.size() == l1.size() * 2);
            CHECK(max_diff(l1, rows, 0) < 1e-3f && max_diff(l2, rows, l1.size()) < 1e-3f);
            bool mismatch = false;
            try {
                sutra::batch_eval({&s1, &s2}, {ids});
            } catch (const sutra::Error &e) {
                mismatch = e.status() == SUTRA_ERR_INVALID_ARGUMENT;
            }
            CHECK(mismatch);
        }

        // Sampler: greedy picks the argmax; bad values throw with the library's message.
        {
            sutra::Sampler greedy(7);
            greedy.top_k(5).greedy();
            CHECK(static_cast<size_t>(greedy.sample(first)) == argmax(first));
            bool bad = false;
            try {
                sutra::Sampler(1).top_p(2.0f);
            } catch (const sutra::Error &e) {
                bad = e.status() == SUTRA_ERR_INVALID_ARGUMENT && !e.message().empty();
            }
            CHECK(bad);
        }

        // Training: the loss on one batch falls; the adapter changes the logits; clearing it
        // gives the base logits back exactly.
        {
            sutra_train_params tp = sutra::Trainer::default_params();
            tp.lora_rank = 4;
            tp.learning_rate = 1e-2f;
            sutra::Trainer trainer(model, tp);
            std::vector<int32_t> stream = tok.encode("ROMEO:\nShe speaks, yet she says nothing: what of that?\n");
            std::vector<int32_t> inputs(stream.begin(), stream.end() - 1), targets(stream.begin() + 1, stream.end());
            float loss0 = trainer.step(inputs, targets);
            float loss = loss0;
            for (int i = 0; i < 4; i++) loss = trainer.step(inputs, targets);
            CHECK(std::isfinite(loss0) && loss < loss0);
            CHECK(trainer.compute(inputs, targets) < loss0);
            sutra::Adapter adapter = trainer.adapter();
            sutra::Session s(model);
            s.set_adapter(adapter, 1.0f);
            std::vector<float> tuned = s.eval(ids);
            CHECK(!same_bits(tuned, first));
            s.reset();
            s.clear_adapters();
            CHECK(same_bits(s.eval(ids), first));
            bool rows = false;
            try {
                trainer.step(inputs, targets, inputs.size() + 1);
            } catch (const sutra::Error &e) {
                rows = e.status() == SUTRA_ERR_INVALID_ARGUMENT;
            }
            CHECK(rows);
        }

        // A missing file: sutra::Error with SUTRA_ERR_IO and a message naming the path.
        {
            const std::string missing = "/nonexistent/sutra-cpp/model.safetensors";
            bool io = false;
            try {
                sutra::Model m(missing);
            } catch (const sutra::Error &e) {
                std::cout << "missing: " << e.what() << "\n";
                io = e.status() == SUTRA_ERR_IO && e.message().find(missing) != std::string::npos &&
                     std::string(e.what()).find("SUTRA_ERR_IO") != std::string::npos &&
                     std::string(e.status_name()) == "SUTRA_ERR_IO";
            }
            CHECK(io);
            bool tok_io = false;
            try {
                sutra::Tokenizer t("/nonexistent/sutra-cpp/tokenizer.json");
            } catch (const std::runtime_error &e) {
                tok_io = std::string(e.what()).find("/nonexistent/sutra-cpp/tokenizer.json") != std::string::npos;
            }
            CHECK(tok_io);
        }
    } catch (const std::exception &e) {
        std::cout << "FAIL: unexpected exception: " << e.what() << std::endl;
        return 1;
    }
    if (failures) {
        std::cout << failures << " of " << checks << " checks failed\n";
        return 1;
    }
    std::cout << "cpp binding ok: " << checks << " checks\n";
    return 0;
}
