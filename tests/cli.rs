//! The `sutra` command line (clap): help and version everywhere, unknown flags refused with
//! a suggestion, llama.cpp's flag names and the earlier spellings, the sampler flags wired
//! into the chain, `bench -r/-o`, `quantize`'s default group, and every flag the README's
//! command lines show.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

const MODEL: &str = "models/rwkv7-shakespeare-6x256/model-bf16.safetensors";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sutra"))
}

fn model() -> String {
    repo(MODEL).display().to_string()
}

fn sutra(args: &[&str]) -> Output {
    command(bin()).args(args).output().expect("run sutra")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `sutra args`, asserting success; its stdout.
fn ok(args: &[&str]) -> String {
    let o = sutra(args);
    assert!(o.status.success(), "sutra {args:?} failed: {}", stderr(&o));
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

/// A fresh temporary folder for one test.
fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sutra-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every command, as the words that name it.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["info"],
    &["logits"],
    &["synth"],
    &["bench"],
    &["tokenize"],
    &["generate"],
    &["chat"],
    &["perplexity"],
    &["quantize"],
    &["lora"],
    &["lora", "train"],
    &["lora", "bench"],
    &["lora", "merge"],
];

#[test]
fn help_and_version_on_every_command() {
    for cmd in COMMANDS {
        let help = ok(&[cmd, &["--help"][..]].concat());
        let name = ["sutra"].iter().chain(cmd.iter()).copied().collect::<Vec<_>>().join(" ");
        assert!(help.contains(&format!("Usage: {name}")), "sutra {cmd:?} --help: {help}");
        assert!(help.contains("-h, --help") && help.contains("-V, --version"), "{help}");
        let short = ok(&[cmd, &["-h"][..]].concat());
        assert!(short.contains(&format!("Usage: {name}")), "{short}");
        let version = ok(&[cmd, &["--version"][..]].concat());
        assert!(version.trim_end().ends_with(env!("CARGO_PKG_VERSION")), "sutra {cmd:?} --version: {version}");
    }
    // `sutra help COMMAND` is the command's --help.
    assert_eq!(ok(&["help", "generate"]), ok(&["generate", "--help"]));
    // No command at all: the help, as a usage error.
    let o = sutra(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage: sutra"), "{}", stderr(&o));
}

#[test]
fn misspelled_flags_and_commands_are_errors_naming_them() {
    let m = model();
    let o = sutra(&["generate", "-m", &m, "--temprature", "0.5"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(o.stdout.is_empty());
    assert!(err.contains("'--temprature'"), "the flag at fault is not named: {err}");
    assert!(err.contains("similar argument exists: '--temp'"), "no suggestion of --temp: {err}");
    let o = sutra(&["bench", &m, "--repetition", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("'--repetitions'"), "{}", stderr(&o));
    let o = sutra(&["genrate", &m]);
    assert!(!o.status.success() && stderr(&o).contains("'generate'"), "{}", stderr(&o));
    // A bad value names the flag too.
    let o = sutra(&["generate", &m, "-p", "A", "--top-k", "many"]);
    assert!(!o.status.success() && stderr(&o).contains("--top-k"), "{}", stderr(&o));
    let o = sutra(&["generate", &m, "-p", "A", "--top-p", "2", "-n", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("--top-p"), "{}", stderr(&o));
    // The model is required: positional or -m, not both.
    let o = sutra(&["generate", "-p", "A"]);
    assert!(!o.status.success() && stderr(&o).contains("MODEL"), "{}", stderr(&o));
    let o = sutra(&["generate", &m, "-m", &m, "-p", "A"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// `sutra generate` with the given flags after the model and `-p KING:`; its stdout.
fn generate(flags: &[&str]) -> String {
    let m = model();
    ok(&[&["generate", "-m", &m, "-p", "KING:", "-n", "24"][..], flags].concat())
}

#[test]
fn generate_with_llama_cpp_flags_is_seeded() {
    let flags = |seed: &'static str| {
        [
            "-s",
            seed,
            "--temp",
            "0.9",
            "--top-k",
            "40",
            "--top-p",
            "0.95",
            "--min-p",
            "0.02",
            "--repeat-penalty",
            "1.1",
            "--repeat-last-n",
            "64",
            "-t",
            "2",
        ]
    };
    let a = generate(&flags("7"));
    assert!(a.starts_with("KING:") && a.trim_end().len() > "KING:".len() + 10, "{a:?}");
    assert_eq!(a, generate(&flags("7")), "the same seed gave different text");
    let others = [generate(&flags("8")), generate(&flags("9"))];
    assert!(others.iter().any(|o| *o != a), "the seed changes nothing: {a:?}");
    // The earlier spellings: --prompt, --n, --seed, --temperature.
    let m = model();
    let old = ok(&[
        "generate",
        &m,
        "--prompt",
        "KING:",
        "--n",
        "24",
        "--seed",
        "7",
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--min-p",
        "0.02",
        "--repeat-penalty",
        "1.1",
    ]);
    assert_eq!(old, a);
}

#[test]
fn greedy_is_deterministic_and_the_filters_reach_the_sampler() {
    let greedy = generate(&["--temp", "0", "-s", "1"]);
    assert!(greedy.trim_end().len() > "KING:".len() + 10, "{greedy:?}");
    assert_eq!(greedy, generate(&["--temp", "0", "-s", "2"]), "greedy depends on the seed");
    assert_eq!(greedy, generate(&["--temperature=0"]));
    // --min-p 1 keeps only the most likely token: any seed, any temperature, greedy's text.
    assert_eq!(greedy, generate(&["--temp", "1.5", "--min-p", "1", "-s", "3"]));
    assert_eq!(greedy, generate(&["--temp", "1.5", "--top-k", "1", "-s", "4"]));
    // A strong repetition penalty changes greedy's text; --repeat-last-n 0 turns it off.
    let penalized = generate(&["--temp", "0", "--repeat-penalty", "3"]);
    assert_ne!(penalized, greedy, "--repeat-penalty does nothing");
    assert_eq!(penalized, generate(&["--temp", "0", "--repeat-penalty", "3", "-s", "5"]));
    assert_eq!(greedy, generate(&["--temp", "0", "--repeat-penalty", "3", "--repeat-last-n", "0"]));
    assert_ne!(generate(&["--temp", "0", "--repeat-penalty", "3", "--repeat-last-n", "-1"]), greedy);
}

#[test]
fn a_prompt_file_is_the_prompt() {
    let dir = tmpdir("prompt");
    let f = dir.join("prompt.txt");
    std::fs::write(&f, "KING:\nWhat").unwrap();
    let m = model();
    let from_file = ok(&["generate", "-m", &m, "-f", f.to_str().unwrap(), "-n", "16", "--temp", "0"]);
    assert!(from_file.starts_with("KING:\nWhat") && from_file.len() > 20, "{from_file:?}");
    // `\n` in -p stands for a newline: the same prompt, the same text.
    assert_eq!(from_file, ok(&["generate", &m, "-p", "KING:\\nWhat", "-n", "16", "--temp", "0"]));
    let o = sutra(&["generate", &m, "-f", f.to_str().unwrap(), "-p", "A"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let missing = dir.join("missing.txt");
    let o = sutra(&["generate", &m, "-f", missing.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("missing.txt"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}

#[test]
fn bench_repetitions_as_json_csv_md_and_plain_lines() {
    let m = model();
    let quick = ["-t", "2", "-p", "16", "-n", "8", "-r", "2", "--batch", "2"];
    let out = ok(&[&["bench", &m, "-o", "json"][..], &quick].concat());
    let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(j["repetitions"], 2);
    assert_eq!(j["arch"], "rwkv7");
    for (test, name, tokens) in [("prefill", "pp16", 16), ("decode", "tg8", 8), ("batch", "tg8x2", 8)] {
        let t = &j[test];
        assert_eq!(t["test"], name, "{t}");
        assert_eq!(t["n_tokens"], tokens);
        for stat in ["tokens_per_s", "ms_per_token"] {
            let s = &t[stat];
            let samples: Vec<f64> = s["samples"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(samples.len(), 2, "{test}.{stat}: {s}");
            assert!(samples.iter().all(|x| x.is_finite() && *x > 0.0), "{test}.{stat}: {s}");
            let (mean, std) = mean_std(&samples);
            let (jm, js) = (s["mean"].as_f64().unwrap(), s["std"].as_f64().unwrap());
            assert!((jm - mean).abs() <= 1e-9 * mean && (js - std).abs() <= 1e-9 * mean.max(std), "{test}.{stat}: {s}");
        }
        let tps = t["tokens_per_s"]["samples"][0].as_f64().unwrap();
        let ms = t["ms_per_token"]["samples"][0].as_f64().unwrap();
        assert!((tps * ms / 1e3 - 1.0).abs() < 1e-9, "{test}: {tps} tokens/s is not {ms} ms/token");
    }
    assert_eq!(j["batch"]["sessions"], 2);
    let csv = ok(&[&["bench", &m, "-o", "csv"][..], &quick].concat());
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "a header and three tests: {csv}");
    assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{csv}");
    let col = rows[0].iter().position(|c| *c == "tokens_per_s_mean").expect("tokens_per_s_mean column");
    assert!(rows[1..].iter().all(|r| r[col].parse::<f64>().unwrap() > 0.0), "{csv}");
    let md = ok(&[&["bench", &m, "-o", "md"][..], &quick].concat());
    let table: Vec<&str> = md.lines().collect();
    assert_eq!(table.len(), 5, "{md}");
    assert!(table.iter().all(|l| l.starts_with('|') && l.ends_with('|')), "{md}");
    assert!(table[2].contains("pp16") && table[2].contains(" ± "), "{md}");
    // The default output: the plain lines scripts read, with the earlier --prompt/--gen.
    let plain = ok(&["bench", &m, "-t", "2", "--prompt", "16", "--gen", "8", "--batch", "2"]);
    let number = |prefix: &str| -> f64 {
        let l = plain.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line: {plain}"));
        l[prefix.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(number("prefill:") > 0.0 && number("decode:") > 0.0, "{plain}");
    assert!(plain.contains("(16 tokens in ") && plain.contains(", 8 tokens)"), "{plain}");
    let batch = plain.lines().find(|l| l.starts_with("batch: 2 sessions, ")).expect("batch line");
    assert!(batch.ends_with(" tokens/s"), "{batch}");
    // -r 2 in plain text: mean ± std, the mean first.
    let plain2 = ok(&["bench", &m, "-t", "2", "-p", "16", "-n", "8", "-r", "2"]);
    assert!(plain2.lines().any(|l| l.starts_with("prefill:") && l.contains(" ± ") && l.contains("2 runs")), "{plain2}");
    let o = sutra(&["bench", &m, "-r", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--repetitions"), "{}", stderr(&o));
}

#[test]
fn quantize_defaults_to_the_c_apis_group_and_prints_plain_progress() {
    let group = sutra::ffi::sutra_quantize_default_params().group_size.to_string();
    let dir = tmpdir("quantize");
    let m = model();
    let file = |name: &str| dir.join(name).display().to_string();
    let o = sutra(&["quantize", &m, &file("default.st"), "-t", "2"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // stderr is not a terminal here: plain lines, no carriage returns.
    assert!(!err.contains('\r'), "{err:?}");
    assert!(err.lines().filter(|l| l.starts_with("quantizing:")).count() >= 2, "{err}");
    assert!(err.lines().any(|l| l == "quantizing: 100%"), "{err}");
    ok(&["quantize", &m, &file("c-default.st"), "--type", "q4", "--group", &group, "--method", "rtn"]);
    ok(&["quantize", &m, &file("g128.st"), "--group", "128"]);
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    assert!(read("default.st") == read("c-default.st"), "the default is not q4, group {group}, rtn");
    assert!(read("default.st") != read("g128.st"), "--group does nothing");
    let o = sutra(&["quantize", &m, &file("bad.st"), "--type", "q3"]);
    assert!(!o.status.success() && stderr(&o).contains("q3"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

/// The words of one shell command line: `"..."` kept together, a `# comment` dropped.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && cur.is_empty() => break,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every `target/release/sutra ...` command line of the README's ```sh blocks (a trailing
/// `\` joins the next line).
fn readme_command_lines(readme: &str) -> Vec<String> {
    let (mut lines, mut in_sh, mut pending) = (Vec::new(), false, None::<String>);
    for l in readme.lines() {
        if l.starts_with("```") {
            in_sh = l.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let l = match pending.take() {
            Some(p) => p + " " + l.trim(),
            None if l.starts_with("target/release/sutra ") => l.to_string(),
            None => continue,
        };
        match l.strip_suffix('\\') {
            Some(head) => pending = Some(head.to_string()),
            None => lines.push(l),
        }
    }
    lines
}

#[test]
fn every_flag_of_the_readme_command_lines_exists() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let lines = readme_command_lines(&readme);
    assert!(lines.len() >= 10, "README command lines not found: {lines:?}");
    let commands =
        ["info", "logits", "synth", "bench", "tokenize", "generate", "chat", "perplexity", "quantize", "lora"];
    let mut flags_checked = 0;
    for line in &lines {
        let w = words(line);
        let mut cmd: Vec<&str> = Vec::new();
        if let Some(c) = w.get(1).filter(|c| commands.contains(&c.as_str())) {
            cmd.push(c);
            if c == "lora" {
                cmd.push(w.get(2).map(String::as_str).unwrap_or_default());
            }
        }
        let help = ok(&[&cmd[..], &["--help"]].concat());
        for word in &w[1..] {
            let flag = word.trim_matches(|c| "[]()".contains(c));
            let flag = flag.split('=').next().unwrap_or_default();
            let is_flag =
                flag.starts_with('-') && flag.len() > 1 && !flag[1..].starts_with(|c: char| c.is_ascii_digit());
            if !is_flag {
                continue;
            }
            // In the help as a whole word: `-m,` / `--model <MODEL>` / `[aliases: --gen]`.
            let listed = help.match_indices(flag).any(|(i, _)| {
                let before = help[..i].chars().next_back().is_none_or(|c| c == ' ' || c == '\n');
                let after = help[i + flag.len()..].chars().next().is_none_or(|c| " ,]\n".contains(c));
                before && after
            });
            assert!(listed, "README: `{line}`: {flag} is not a flag of sutra {}", cmd.join(" "));
            flags_checked += 1;
        }
    }
    assert!(flags_checked >= 30, "only {flags_checked} flags found in the README's command lines");
}

#[test]
fn info_lora_merge_and_synth_parse_as_before() {
    let m = model();
    let info = ok(&["info", "-m", &m]);
    assert!(info.contains("architecture:    rwkv7") && info.contains("n_layer:         6"), "{info}");
    assert_eq!(info, ok(&["info", &m]));
    assert!(ok(&["info", "--system"]).contains("kernels"));
    let o = sutra(&["info"]);
    assert!(!o.status.success() && stderr(&o).contains("MODEL"), "{}", stderr(&o));
    let o = sutra(&["lora", "merge", &m, "--out", "/tmp/x.st"]);
    assert!(!o.status.success() && stderr(&o).contains("ADAPTER"), "{}", stderr(&o));
    let o = sutra(&["synth", "--arch", "rwkv9", "--layers", "1", "--width", "64", "--vocab", "10", "--out", "/tmp/x"]);
    assert!(!o.status.success() && stderr(&o).contains("rwkv9") && stderr(&o).contains("rwkv7"), "{}", stderr(&o));
    let dir = tmpdir("synth");
    let out = dir.join("s.st");
    ok(&[
        "synth",
        "--arch",
        "mamba1",
        "--layers",
        "1",
        "--width",
        "32",
        "--vocab",
        "40",
        "--out",
        out.to_str().unwrap(),
    ]);
    let synth_info = ok(&["info", out.to_str().unwrap()]);
    assert!(synth_info.contains("n_vocab:         40"), "{synth_info}");
    std::fs::remove_dir_all(Path::new(&dir)).ok();
}

/// A reader that closes its end of the output pipe at once (`sutra info --tensors M | head
/// -0`): the program ends by SIGPIPE or an error, as C tools do, never in a Rust panic.
#[test]
fn a_closed_output_pipe_is_no_panic() {
    use std::process::Stdio;
    let mut child = command(bin())
        .args(["info", "--tensors", &model()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sutra");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
}
