//! `sutra`: the command-line tool of libsutra.
//!
//! ```text
//! sutra info MODEL | --system
//! sutra logits MODEL --tokens 1,2,3 [--prefill] [-t N] --out FILE.safetensors
//! sutra synth --arch rwkv7 --layers L --width D --vocab V [--head-size N] [--dtype f32|bf16|f16] [--seed S] --out FILE
//! sutra bench MODEL [-t N] [-p 512] [-n 128] [-r 1] [-o text|md|csv|json] [--batch N] [--no-mmap]
//! sutra tokenize TOKENIZER "text" [--special] | --bench FILE
//! sutra generate MODEL [--tokenizer T] -p "..." | -f FILE [-n 200] [-s S] [--temp 0.8] [--top-k 0] [--top-p 0.9]
//!                [--min-p 0] [--repeat-penalty 1 --repeat-last-n 64] [--stop TEXT]
//! sutra chat MODEL [--tokenizer T] [sampling as generate] [-n 300]
//! sutra perplexity MODEL [--tokenizer T] -f TEXT [--bos 0] [-c 1024] [--kl-base BASE]
//! sutra quantize IN OUT [--type q4|q8] [--group 32] [--method rtn|awq] [--calib TEXT] [--calib-tokens N]
//! sutra lora train MODEL --data TEXT --out DIR [--rank --alpha --targets --lr --steps --ctx --batch --seed --eval-frac --state]
//! sutra lora bench MODEL [--ctx 512 --rank 8 --steps 3]
//! sutra lora merge MODEL ADAPTER[:SCALE]... --out FILE [--dtype f32|bf16]
//! ```
//!
//! The arguments are parsed by clap: an unknown flag is an error naming it (with the nearest
//! known one), and every command has `--help` and `--version`. Where llama.cpp has a flag for
//! the same thing, its spelling is the one used (`-m`, `-p`, `-f`, `-n`, `-t`, `-s`, `--temp`,
//! `--top-k`, `--top-p`, `--min-p`, `--repeat-penalty`, `--repeat-last-n`; `bench`'s `-p`, `-n`,
//! `-r`, `-o` as llama-bench's), and the earlier spellings stay as aliases.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::tensor::DType;
use sutra::{generate, Error, GenerateParams, Model, ModelParams, Result, Sampler, Session, Stage, Tokenizer};

/// The default quantization group: the C API's (`sutra_quantize_default_params`).
const DEFAULT_GROUP: usize = 32;

#[derive(Parser, Debug)]
#[command(
    name = "sutra",
    version,
    about = "libsutra's command line: run, score, benchmark, quantize and fine-tune RWKV and Mamba models on the CPU",
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "generate, chat, perplexity, bench and logits take --lora DIR[:SCALE] (repeatable) and \
--init-state FILE.\nEvery command that loads MODEL takes -t/--threads N, --no-mmap and --check-finite.\n\
A tokenizer.json or rwkv_vocab_v20230424.txt next to MODEL is used when --tokenizer is not given.\n\
MODEL is positional or -m/--model FILE."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The model's shape, parameters and state size (or, with --system, the CPU features found)
    Info(InfoArgs),
    /// Logits of a token sequence, written as a safetensors file
    Logits(LogitsArgs),
    /// Write a random checkpoint in the official layout at any shape
    Synth(SynthArgs),
    /// Prefill tokens/s and decode ms/token on random tokens (as llama-bench)
    Bench(BenchArgs),
    /// Token ids of a text (each token's text on stderr), or tokenizer MB/s with --bench
    Tokenize(TokenizeArgs),
    /// Continue a prompt
    Generate(GenerateArgs),
    /// Interactive chat on stdin; the recurrent state carries the conversation
    Chat(ChatArgs),
    /// Perplexity and bits per byte of a text file (and KL divergence to a base model)
    Perplexity(PerplexityArgs),
    /// Quantize a checkpoint to q8 or q4
    Quantize(QuantizeArgs),
    /// Write any checkpoint libsutra reads (.pth, GGUF, a folder) as one safetensors file
    Convert(ConvertArgs),
    /// Train, benchmark or merge LoRA adapters (and tuned initial states)
    #[command(subcommand)]
    Lora(LoraCmd),
}

#[derive(Subcommand, Debug)]
enum LoraCmd {
    /// Train a PEFT adapter (or the initial state, with --state) on a text file; Ctrl-C saves
    Train(Box<LoraTrainArgs>),
    /// Training tokens/s and peak RSS beside prefill at one shape
    Bench(LoraBenchArgs),
    /// Bake adapters into a new checkpoint (a quantized base is written dequantized)
    Merge(LoraMergeArgs),
}

/// The model, positional (as before) or `-m/--model` (as llama.cpp): exactly one of them.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct ModelArg {
    /// Model file (.safetensors, or a libsutra quantized file)
    #[arg(value_name = "MODEL")]
    model_pos: Option<PathBuf>,
    /// Model file (instead of the positional MODEL)
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model: Option<PathBuf>,
}

impl ModelArg {
    fn path(&self) -> &Path {
        // The group makes one of them present; clap enforces it before this runs.
        self.model.as_deref().or(self.model_pos.as_deref()).unwrap_or(Path::new(""))
    }
}

/// How the model is loaded.
#[derive(Args, Debug)]
struct LoadArgs {
    /// Worker threads (0 = all cores)
    #[arg(short = 't', long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Read the weights into memory instead of mapping the file
    #[arg(long)]
    no_mmap: bool,
    /// Scan the weights for NaN/Inf when loading
    #[arg(long)]
    check_finite: bool,
}

impl LoadArgs {
    fn params(&self) -> ModelParams {
        ModelParams { n_threads: self.threads, use_mmap: !self.no_mmap, check_finite: self.check_finite }
    }
}

/// What a session starts with.
#[derive(Args, Debug)]
struct SessionArgs {
    /// A PEFT adapter folder applied at run time, at SCALE (1 when absent); repeatable
    #[arg(long = "lora", value_name = "DIR[:SCALE]")]
    lora: Vec<String>,
    /// Start from a saved state blob (e.g. DIR/state.bin of `sutra lora train --state`)
    #[arg(long, value_name = "FILE")]
    init_state: Option<PathBuf>,
}

/// The tokenizer (found next to the model when absent).
#[derive(Args, Debug)]
struct TokArg {
    /// tokenizer.json or rwkv_vocab_v20230424.txt (default: the one next to MODEL)
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
}

/// The sampler chain, in llama.cpp's order: penalties, top-k, top-p, min-p, temperature, draw.
#[derive(Args, Debug)]
struct SamplingArgs {
    /// Random seed (-1 = from the clock)
    #[arg(short = 's', long, value_name = "S", default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,
    /// Temperature (0 = greedy; also spelled --temperature)
    #[arg(long = "temp", value_name = "T", default_value_t = 0.8)]
    temp: f32,
    /// Keep the K most likely tokens (0 = off)
    #[arg(long, value_name = "K", default_value_t = 0)]
    top_k: usize,
    /// Keep the most likely tokens up to cumulative probability P (1 = off)
    #[arg(long, value_name = "P", default_value_t = 0.9)]
    top_p: f32,
    /// Keep the tokens at least P times as likely as the best one (0 = off)
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    min_p: f32,
    /// Divide a recent token's logit by this (multiply when negative; 1 = off)
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Tokens the penalties look back on (0 = penalties off, -1 = the whole history)
    #[arg(long, value_name = "N", default_value_t = 64, allow_negative_numbers = true)]
    repeat_last_n: i64,
    /// Subtract this from the logit of a token seen in the last --repeat-last-n (0 = off)
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    presence_penalty: f32,
    /// Subtract this times its count from a recent token's logit (0 = off)
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    frequency_penalty: f32,
    /// RWKV's decaying presence penalty (with --frequency and --decay; 0 = off)
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    presence: f32,
    /// RWKV's decaying frequency penalty (per decayed occurrence; 0 = off)
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    frequency: f32,
    /// Per-token decay of the occurrences RWKV's penalty counts
    #[arg(long, value_name = "X", default_value_t = 0.996)]
    decay: f32,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Model file
    #[arg(value_name = "MODEL", conflicts_with_all = ["model", "system"])]
    model_pos: Option<PathBuf>,
    /// Model file (instead of the positional MODEL)
    #[arg(short = 'm', long = "model", value_name = "MODEL", conflicts_with = "system")]
    model: Option<PathBuf>,
    /// The CPU features found and the kernels chosen, instead of a model
    #[arg(long)]
    system: bool,
    /// Every tensor (name, type, shape), not just the count of each type
    #[arg(long)]
    tensors: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Token ids, comma-separated
    #[arg(long, value_name = "1,2,3")]
    tokens: String,
    /// One batched evaluation: only the last position's logits (else every position's)
    #[arg(long)]
    prefill: bool,
    /// The safetensors file to write (tensor `logits`, [rows, n_vocab] f32)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Architecture
    #[arg(long, value_parser = ["rwkv4", "rwkv5", "rwkv6", "rwkv7", "mamba1", "mamba2"])]
    arch: String,
    /// Blocks
    #[arg(long, value_name = "L")]
    layers: usize,
    /// Width of the residual stream
    #[arg(long, value_name = "D")]
    width: usize,
    /// Vocabulary size
    #[arg(long, value_name = "V")]
    vocab: usize,
    /// Head size (RWKV v5+, Mamba-2)
    #[arg(long, value_name = "N", default_value_t = 64)]
    head_size: usize,
    /// Storage type of the weights
    #[arg(long, value_enum, default_value_t = SynthDType::F32)]
    dtype: SynthDType,
    /// Random seed of the weights
    #[arg(short = 's', long, value_name = "S", default_value_t = 42)]
    seed: u64,
    /// The checkpoint to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum SynthDType {
    F32,
    Bf16,
    F16,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MergeDType {
    F32,
    Bf16,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BenchOutput {
    /// The plain `prefill:`/`decode:`/`batch:` lines
    Text,
    /// A markdown table, as llama-bench's
    Md,
    /// CSV with a header row
    Csv,
    /// One JSON object
    Json,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Prompt tokens to prefill (random ids)
    #[arg(short = 'p', long = "n-prompt", visible_alias = "prompt", value_name = "N", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens to decode (greedy, one per step)
    #[arg(short = 'n', long = "n-gen", visible_alias = "gen", value_name = "N", default_value_t = 128)]
    n_gen: usize,
    /// Runs of each test; mean ± standard deviation over them
    #[arg(short = 'r', long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repetitions: u32,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value_t = BenchOutput::Text)]
    output: BenchOutput,
    /// Also decode N sessions together (Session::eval_batch): aggregate tokens/s (0 = off)
    #[arg(long, value_name = "N", default_value_t = 0)]
    batch: usize,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(Args, Debug)]
struct TokenizeArgs {
    /// tokenizer.json or rwkv_vocab_v20230424.txt
    #[arg(value_name = "TOKENIZER")]
    tokenizer: PathBuf,
    /// The text to encode
    #[arg(value_name = "TEXT", required_unless_present = "bench")]
    text: Option<String>,
    /// Parse special tokens in the text
    #[arg(long)]
    special: bool,
    /// Encode/decode throughput on the text of FILE (best of 3, one thread) instead
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    bench: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The prompt (`\n` stands for a newline)
    #[arg(short = 'p', long, value_name = "TEXT", required_unless_present = "file", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from FILE (as it is)
    #[arg(short = 'f', long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Tokens to generate at most
    #[arg(short = 'n', long = "n-predict", visible_alias = "n", value_name = "N", default_value_t = 200)]
    n_predict: usize,
    /// Stop when the output ends with TEXT (`\n` stands for a newline)
    #[arg(long, value_name = "TEXT")]
    stop: Option<String>,
    #[command(flatten)]
    tok: TokArg,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(Args, Debug)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Tokens to generate at most per turn
    #[arg(short = 'n', long = "n-predict", visible_alias = "n", value_name = "N", default_value_t = 300)]
    n_predict: usize,
    /// The user's name in the transcript
    #[arg(long, value_name = "NAME", default_value = "User")]
    user: String,
    /// The model's name in the transcript
    #[arg(long, value_name = "NAME", default_value = "Assistant")]
    bot: String,
    #[command(flatten)]
    tok: TokArg,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(Args, Debug)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArg,
    /// The text to score, fed as one stream from the zero state
    #[arg(short = 'f', long, value_name = "TEXT")]
    file: PathBuf,
    /// The token put in front of the text
    #[arg(long, value_name = "ID", default_value_t = 0)]
    bos: u32,
    /// Tokens per evaluation window
    #[arg(short = 'c', long = "ctx-size", visible_alias = "ctx", value_name = "N", default_value_t = 1024)]
    ctx_size: usize,
    /// Also the KL divergence from this model's distributions and the top-1 agreement
    #[arg(long, value_name = "BASE")]
    kl_base: Option<PathBuf>,
    #[command(flatten)]
    tok: TokArg,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    session: SessionArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum QType {
    Q8,
    Q4,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum QMethod {
    Rtn,
    Awq,
}

#[derive(Args, Debug)]
struct ConvertArgs {
    /// The checkpoint to read
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// The safetensors file to write
    #[arg(value_name = "OUT")]
    output: PathBuf,
}

#[derive(Args, Debug)]
struct QuantizeArgs {
    /// The checkpoint to quantize
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// The quantized file to write
    #[arg(value_name = "OUT")]
    output: PathBuf,
    /// Format (the C API's default: q4)
    #[arg(long = "type", value_enum, default_value_t = QType::Q4)]
    qtype: QType,
    /// Weights per group: 32, 64 or 128 (the C API's default: 32)
    #[arg(long, value_name = "G", default_value_t = DEFAULT_GROUP)]
    group: usize,
    /// Round to nearest, or activation-aware scaling (needs --calib)
    #[arg(long, value_enum, default_value_t = QMethod::Rtn)]
    method: QMethod,
    /// Calibration text (AWQ)
    #[arg(long, value_name = "TEXT")]
    calib: Option<PathBuf>,
    /// Tokens of calibration text to run (AWQ)
    #[arg(long, value_name = "N", default_value_t = 8192)]
    calib_tokens: usize,
    /// Tensors whose name contains NAME stay in the source precision (comma-separated or repeated)
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    keep: Vec<String>,
    /// Worker threads (0 = all cores)
    #[arg(short = 't', long, value_name = "N", default_value_t = 0)]
    threads: usize,
    #[command(flatten)]
    tok: TokArg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TuneArg {
    Adapter,
    State,
    Both,
}

#[derive(Args, Debug)]
struct LoraTrainArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Training text; its last --eval-frac is held out
    #[arg(long, value_name = "TEXT")]
    data: PathBuf,
    /// Folder written (adapter_model.safetensors + adapter_config.json, and/or state.bin)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// LoRA rank [default: 8]
    #[arg(long, value_name = "R")]
    rank: Option<usize>,
    /// LoRA alpha [default: 16]
    #[arg(long, value_name = "A")]
    alpha: Option<f32>,
    /// Matrices adapted, comma-separated (e.g. att.key,att.value) [default: every block matrix]
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    targets: Vec<String>,
    /// AdamW learning rate [default: 1e-3]
    #[arg(long, value_name = "LR")]
    lr: Option<f32>,
    /// AdamW weight decay [default: 0]
    #[arg(long, value_name = "X")]
    weight_decay: Option<f32>,
    /// Optimizer steps
    #[arg(long, value_name = "N", default_value_t = 100)]
    steps: usize,
    /// Tokens per training row
    #[arg(long, value_name = "N", default_value_t = 128)]
    ctx: usize,
    /// Rows per step
    #[arg(long, value_name = "N", default_value_t = 4)]
    batch: usize,
    /// Random seed of the adapter's initialization
    #[arg(short = 's', long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Fraction of the text held out for evaluation, in [0, 1)
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    eval_frac: f32,
    /// Score the held-out text every N steps
    #[arg(long, value_name = "N", default_value_t = 20)]
    eval_every: usize,
    /// Held-out tokens scored at most
    #[arg(long, value_name = "N", default_value_t = 4096)]
    eval_tokens: usize,
    /// Start from this adapter folder
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
    /// Clip the gradient norm to this (0 = off) [default: 0]
    #[arg(long, value_name = "X")]
    grad_clip: Option<f32>,
    /// Tokens per truncated-backprop chunk [default: the library's, 256]
    #[arg(long, value_name = "N")]
    chunk: Option<usize>,
    /// Tune the initial state alone (as --tune state)
    #[arg(long)]
    state: bool,
    /// What to tune
    #[arg(long, value_enum, value_name = "WHAT")]
    tune: Option<TuneArg>,
    /// Learning rate of the initial state [default: the library's]
    #[arg(long, value_name = "LR")]
    state_lr: Option<f32>,
    /// Start the state from this blob
    #[arg(long, value_name = "FILE")]
    init_state: Option<PathBuf>,
    #[command(flatten)]
    tok: TokArg,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct LoraBenchArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Tokens per step (batch 1)
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,
    /// LoRA rank
    #[arg(long, value_name = "R", default_value_t = 8)]
    rank: usize,
    /// Timed rounds (after one warm-up); medians reported
    #[arg(long, value_name = "N", default_value_t = 3)]
    steps: usize,
    /// Tokens per truncated-backprop chunk [default: the library's, 256]
    #[arg(long, value_name = "N")]
    chunk: Option<usize>,
    /// Tune the initial state too
    #[arg(long)]
    state: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args, Debug)]
struct LoraMergeArgs {
    /// MODEL (unless -m is given), then one or more ADAPTER[:SCALE]
    #[arg(value_name = "MODEL ADAPTER[:SCALE]", required = true)]
    items: Vec<String>,
    /// Model file (then every positional argument is an adapter)
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The merged checkpoint to write
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Storage type of the merged weights
    #[arg(long, value_enum, default_value_t = MergeDType::F32)]
    dtype: MergeDType,
}

/// Progress on stderr: one line redrawn in place on a terminal; otherwise a plain line at
/// each tenth of the way (so that a log file gets lines, not carriage returns).
struct Progress {
    tty: bool,
    next: f64,
    drawn: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress { tty: std::io::stderr().is_terminal(), next: 0.1, drawn: false }
    }

    /// Reports `frac` (0..=1) done; `line` is called only when something is printed.
    fn update(&mut self, frac: f64, line: impl FnOnce() -> String) {
        if self.tty {
            eprint!("\r{}", line());
            self.drawn = true;
        } else if frac >= self.next {
            eprintln!("{}", line());
            self.next = ((frac * 10.0).floor() + 1.0) / 10.0;
        }
    }

    /// Ends the in-place line, if one was drawn.
    fn finish(&self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// `PATH[:SCALE]` (scale 1 when absent).
fn path_scale(spec: &str) -> (PathBuf, f32) {
    match spec.rsplit_once(':') {
        Some((p, sc)) if !p.is_empty() => match sc.parse::<f32>() {
            Ok(sc) => (PathBuf::from(p), sc),
            Err(_) => (PathBuf::from(spec), 1.0),
        },
        _ => (PathBuf::from(spec), 1.0),
    }
}

/// A new session of `m` with the `--lora` adapters attached, at the state blob of
/// `--init-state FILE` when given (a tuned initial state from `sutra lora train --state`).
fn session(args: &SessionArgs, m: &Arc<Model>) -> Result<Session> {
    let mut s = Session::new(m);
    for spec in &args.lora {
        let (p, sc) = path_scale(spec);
        s.set_adapter(&Arc::new(sutra::Adapter::load(m, &p)?), sc)?;
    }
    if let Some(f) = &args.init_state {
        let blob = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        s.load_state(&blob).map_err(|e| Error::format(format!("--init-state {}: {e}", f.display())))?;
    }
    Ok(s)
}

fn load(model: &Path, load: &LoadArgs) -> Result<Arc<Model>> {
    Ok(Arc::new(Model::load(model, &load.params())?))
}

/// The tokenizer given by --tokenizer, or the one next to the model.
fn tokenizer_for(tok: &TokArg, model: &Path) -> Result<Tokenizer> {
    if let Some(t) = &tok.tokenizer {
        return Tokenizer::from_file(t);
    }
    let dir = model.parent().unwrap_or(Path::new("."));
    for name in ["tokenizer.json", "rwkv_vocab_v20230424.txt"] {
        let p = dir.join(name);
        if p.exists() {
            return Tokenizer::from_file(&p);
        }
    }
    Err(Error::invalid(format!("no tokenizer: give --tokenizer, or put tokenizer.json next to {}", model.display())))
}

/// The sampler the command line describes, in llama.cpp's order: penalties (when any is
/// on), RWKV's decaying penalty (when on), then greedy at `--temp 0`, else top-k, top-p,
/// min-p, temperature and a draw.
fn sampler_for(a: &SamplingArgs) -> Result<Sampler> {
    let seed = match u64::try_from(a.seed) {
        Ok(s) => s,
        Err(_) if a.seed == -1 => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        }
        Err(_) => return Err(Error::invalid(format!("--seed {}: a non-negative integer, or -1 (random)", a.seed))),
    };
    let mut s = Sampler::new(seed);
    let last_n = match a.repeat_last_n {
        -1 => Some(0),
        0 => None,
        n if n > 0 => Some(n as usize),
        n => return Err(Error::invalid(format!("--repeat-last-n {n}: -1 (all), 0 (off) or a window of tokens"))),
    };
    let penalized = a.repeat_penalty != 1.0 || a.presence_penalty != 0.0 || a.frequency_penalty != 0.0;
    if let (Some(last_n), true) = (last_n, penalized) {
        s.add(Stage::Penalties {
            last_n,
            repeat: a.repeat_penalty,
            frequency: a.frequency_penalty,
            presence: a.presence_penalty,
        })
        .map_err(|e| Error::invalid(format!("--repeat-penalty/--presence-penalty/--frequency-penalty: {e}")))?;
    }
    if a.presence != 0.0 || a.frequency != 0.0 {
        s.add(Stage::RwkvPresence { presence: a.presence, frequency: a.frequency, decay: a.decay })
            .map_err(|e| Error::invalid(format!("--presence/--frequency/--decay: {e}")))?;
    }
    if a.temp <= 0.0 {
        s.add(Stage::Greedy)?;
        return Ok(s);
    }
    s.add(Stage::TopK(a.top_k)).map_err(|e| Error::invalid(format!("--top-k: {e}")))?;
    s.add(Stage::TopP { p: a.top_p, min_keep: 1 }).map_err(|e| Error::invalid(format!("--top-p: {e}")))?;
    s.add(Stage::MinP(a.min_p)).map_err(|e| Error::invalid(format!("--min-p: {e}")))?;
    s.add(Stage::Temperature(a.temp)).map_err(|e| Error::invalid(format!("--temp: {e}")))?;
    s.add(Stage::Dist)?;
    Ok(s)
}

/// Stop tokens: `<|endoftext|>` when the tokenizer has it.
fn default_stop_tokens(tok: &Tokenizer) -> Vec<u32> {
    tok.token_to_id("<|endoftext|>").into_iter().collect()
}

fn human(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.2} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn cmd_info(a: &InfoArgs) -> Result<()> {
    if a.system {
        println!("{}", sutra::kernels::dot::system_info());
        return Ok(());
    }
    let path = a
        .model
        .as_deref()
        .or(a.model_pos.as_deref())
        .ok_or_else(|| Error::invalid("MODEL (or -m MODEL, or --system) is required; see sutra info --help"))?;
    let m = load(path, &a.load)?;
    let i = m.info();
    println!("architecture:    {} (family {:?}, version {})", i.arch_name, i.family, i.version);
    println!("n_layer:         {}", i.n_layer);
    println!("n_embd:          {}", i.n_embd);
    println!("n_vocab:         {}", i.n_vocab);
    if i.n_head > 0 {
        println!("n_head:          {} x head_size {}", i.n_head, i.head_size);
    }
    println!("parameters:      {}", i.n_params);
    println!("weight dtype:    {}", i.weight_dtype.name());
    println!("bytes per token: {} ({})", i.bytes_per_token, human(i.bytes_per_token));
    println!("state:           {} floats ({})", m.arch().state_len(), human(4 * m.arch().state_len() as u64));
    println!("threads:         {}", m.n_threads());
    println!("kernels:         {:?}", sutra::kernels::isa());
    let c = m.checkpoint();
    println!("format:          {}", c.format.name());
    let mut types = std::collections::BTreeMap::<&str, usize>::new();
    for (_, dtype, _) in &c.tensors {
        *types.entry(dtype.name()).or_default() += 1;
    }
    let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} x{n}")).collect();
    println!("tensor types:    {}", types.join(", "));
    if a.tensors {
        for (name, dtype, shape) in &c.tensors {
            println!("  {name:<48} {:<6} {shape:?}", dtype.name());
        }
    }
    // Metadata: one line per key, long values (vocabularies, templates, embedded configs) cut.
    for (k, v) in &c.metadata {
        let v = v.replace('\n', "\\n");
        let shown: String = v.chars().take(96).collect();
        let more = if shown.len() < v.len() { format!("… ({} bytes)", v.len()) } else { String::new() };
        println!("meta {k}: {shown}{more}");
    }
    Ok(())
}

fn cmd_logits(a: &LogitsArgs) -> Result<()> {
    let m = load(a.model.path(), &a.load)?;
    let tokens: Vec<u32> = a
        .tokens
        .split(',')
        .map(|t| t.trim().parse::<u32>().map_err(|_| Error::invalid(format!("--tokens: '{t}' is not a token id"))))
        .collect::<Result<_>>()?;
    let v = m.info().n_vocab;
    let mut s = session(&a.session, &m)?;
    let (rows, logits) = if a.prefill {
        let mut l = vec![0f32; v];
        s.eval(&tokens, Some(&mut l))?;
        (1, l)
    } else {
        let mut l = vec![0f32; tokens.len() * v];
        for (i, t) in tokens.iter().enumerate() {
            s.eval_stepwise(std::slice::from_ref(t), Some(&mut l[i * v..(i + 1) * v]))?;
        }
        (tokens.len(), l)
    };
    let bytes = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    sutra::format::safetensors::write(&a.out, &[("logits".into(), DType::F32, vec![rows, v], bytes)], None)?;
    eprintln!("wrote logits [{rows}, {v}] to {}", a.out.display());
    Ok(())
}

fn cmd_synth(a: &SynthArgs) -> Result<()> {
    let spec = SynthSpec {
        arch: a.arch.clone(),
        n_layer: a.layers,
        n_embd: a.width,
        n_vocab: a.vocab,
        head_size: a.head_size,
        dtype: match a.dtype {
            SynthDType::F32 => DType::F32,
            SynthDType::Bf16 => DType::BF16,
            SynthDType::F16 => DType::F16,
        },
        seed: a.seed,
    };
    synthesize(&spec, &a.out)?;
    eprintln!("wrote {} ({:?})", a.out.display(), spec);
    Ok(())
}

/// Peak resident set size of this process, from /proc (Linux); None elsewhere.
fn peak_rss() -> Option<u64> {
    peak_rss_kib().map(|kb| kb * 1024)
}

/// Mean and sample standard deviation (n − 1; 0 for one sample) of `v`.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One benchmark test's samples (one per repetition), as tokens/s.
struct BenchTest {
    /// llama-bench's name: `pp512`, `tg128`, `tg128x4` (4 sessions together).
    name: String,
    n_tokens: usize,
    sessions: usize,
    tokens_per_s: Vec<f64>,
}

impl BenchTest {
    fn tps(&self) -> (f64, f64) {
        mean_std(&self.tokens_per_s)
    }

    fn ms_per_token(&self) -> Vec<f64> {
        self.tokens_per_s.iter().map(|t| 1e3 / t).collect()
    }

    fn ms(&self) -> (f64, f64) {
        mean_std(&self.ms_per_token())
    }

    fn json(&self) -> serde_json::Value {
        let stat = |v: &[f64]| {
            let (mean, std) = mean_std(v);
            serde_json::json!({ "mean": mean, "std": std, "samples": v })
        };
        serde_json::json!({
            "test": self.name,
            "n_tokens": self.n_tokens,
            "sessions": self.sessions,
            "tokens_per_s": stat(&self.tokens_per_s),
            "ms_per_token": stat(&self.ms_per_token()),
        })
    }
}

/// A CSV field, quoted when it has to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn cmd_bench(a: &BenchArgs) -> Result<()> {
    let path = a.model.path();
    let t0 = Instant::now();
    let m = load(path, &a.load)?;
    let load_s = t0.elapsed().as_secs_f64();
    let i = m.info().clone();
    let v = i.n_vocab;
    let mut rng = sutra::rng::Rng::new(1234);
    let prompt: Vec<u32> = (0..a.n_prompt.max(1)).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let n_gen = a.n_gen.max(1);
    let mut s = session(&a.session, &m)?;
    let mut logits = vec![0f32; v];
    // Warm-up, as llama-bench (and both anchor drivers) do: one whole prompt, uncounted. It
    // touches every weight page, the prompt's embedding rows and the prefill's scratch, so the
    // timed runs measure the kernels, not first-use page faults. Then one decode step, which
    // sizes the one-token scratch.
    s.eval(&prompt, Some(&mut logits))?;
    s.eval_stepwise(&prompt[..1], Some(&mut logits))?;
    let reps = a.repetitions as usize;
    let mut pp =
        BenchTest { name: format!("pp{}", prompt.len()), n_tokens: prompt.len(), sessions: 1, tokens_per_s: vec![] };
    let mut tg = BenchTest { name: format!("tg{n_gen}"), n_tokens: n_gen, sessions: 1, tokens_per_s: vec![] };
    let mut prefill_s = 0.0;
    for _ in 0..reps {
        s.reset();
        let t1 = Instant::now();
        s.eval(&prompt, Some(&mut logits))?;
        prefill_s = t1.elapsed().as_secs_f64();
        pp.tokens_per_s.push(prompt.len() as f64 / prefill_s);
        let t2 = Instant::now();
        for _ in 0..n_gen {
            let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(k, _)| k as u32);
            s.eval_stepwise(&[next], Some(&mut logits))?;
        }
        tg.tokens_per_s.push(n_gen as f64 / t2.elapsed().as_secs_f64());
    }
    let batch = if a.batch > 0 {
        let mut b = BenchTest {
            name: format!("tg{n_gen}x{}", a.batch),
            n_tokens: n_gen,
            sessions: a.batch,
            tokens_per_s: vec![],
        };
        for _ in 0..reps {
            b.tokens_per_s.push(batch_decode_tps(&m, &a.session, a.batch, n_gen)?);
        }
        Some(b)
    } else {
        None
    };
    let model_name = format!("{} {}x{} ({})", i.arch_name, i.n_layer, i.n_embd, i.weight_dtype.name());
    let kernels = format!("{:?}", sutra::kernels::isa());
    let tests: Vec<&BenchTest> = [Some(&pp), Some(&tg), batch.as_ref()].into_iter().flatten().collect();
    match a.output {
        BenchOutput::Text => {
            let (pp_mean, pp_std) = pp.tps();
            let (ms_mean, ms_std) = tg.ms();
            println!(
                "model:        {} {} layers x {} vocab {} ({})",
                i.arch_name,
                i.n_layer,
                i.n_embd,
                i.n_vocab,
                i.weight_dtype.name()
            );
            println!("threads:      {}   kernels: {kernels}", m.n_threads());
            println!("load:         {:.1} ms", load_s * 1e3);
            if reps == 1 {
                println!("prefill:      {pp_mean:.1} tokens/s ({} tokens in {prefill_s:.3} s)", prompt.len());
                println!("decode:       {ms_mean:.2} ms/token ({:.1} tokens/s, {n_gen} tokens)", 1e3 / ms_mean);
            } else {
                println!("prefill:      {pp_mean:.1} ± {pp_std:.1} tokens/s ({} tokens, {reps} runs)", prompt.len());
                println!(
                    "decode:       {ms_mean:.2} ± {ms_std:.2} ms/token ({:.1} tokens/s, {n_gen} tokens, {reps} runs)",
                    tg.tps().0
                );
            }
            println!("weights read: {} per token", human(i.bytes_per_token));
            println!(
                "bandwidth:    {:.2} GB/s effective while decoding",
                i.bytes_per_token as f64 / (ms_mean / 1e3) / 1e9
            );
            if let Some(b) = &batch {
                let (mean, std) = b.tps();
                if reps == 1 {
                    println!("batch: {} sessions, {mean:.1} tokens/s", b.sessions);
                } else {
                    println!("batch: {} sessions, {mean:.1} ± {std:.1} tokens/s ({reps} runs)", b.sessions);
                }
            }
            if let Some(rss) = peak_rss() {
                println!("peak RSS:     {}", human(rss));
            }
        }
        BenchOutput::Md => {
            println!("| model | params | threads | test | t/s | ms/token |");
            println!("| --- | ---: | ---: | ---: | ---: | ---: |");
            for t in &tests {
                let ((tm, ts), (mm, ms)) = (t.tps(), t.ms());
                println!(
                    "| {model_name} | {:.2} M | {} | {} | {tm:.2} ± {ts:.2} | {mm:.3} ± {ms:.3} |",
                    i.n_params as f64 / 1e6,
                    m.n_threads(),
                    t.name
                );
            }
        }
        BenchOutput::Csv => {
            println!(
                "model,arch,n_layer,n_embd,n_vocab,weight_dtype,n_params,threads,kernels,test,n_tokens,sessions,\
                 repetitions,tokens_per_s_mean,tokens_per_s_std,ms_per_token_mean,ms_per_token_std"
            );
            for t in &tests {
                let ((tm, ts), (mm, ms)) = (t.tps(), t.ms());
                println!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{reps},{tm},{ts},{mm},{ms}",
                    csv_field(&path.display().to_string()),
                    i.arch_name,
                    i.n_layer,
                    i.n_embd,
                    i.n_vocab,
                    i.weight_dtype.name(),
                    i.n_params,
                    m.n_threads(),
                    csv_field(&kernels),
                    t.name,
                    t.n_tokens,
                    t.sessions
                );
            }
        }
        BenchOutput::Json => {
            let j = serde_json::json!({
                "model": path.display().to_string(),
                "arch": i.arch_name,
                "n_layer": i.n_layer,
                "n_embd": i.n_embd,
                "n_vocab": i.n_vocab,
                "weight_dtype": i.weight_dtype.name(),
                "n_params": i.n_params,
                "bytes_per_token": i.bytes_per_token,
                "threads": m.n_threads(),
                "kernels": kernels,
                "repetitions": reps,
                "load_ms": load_s * 1e3,
                "prefill": pp.json(),
                "decode": tg.json(),
                "batch": batch.as_ref().map(BenchTest::json),
                "peak_rss_bytes": peak_rss(),
            });
            println!("{}", serde_json::to_string_pretty(&j).map_err(|e| Error::invalid(format!("json: {e}")))?);
        }
    }
    Ok(())
}

/// Aggregate decode throughput of `n` sessions advanced together by [`Session::eval_batch`]
/// (one token each per step, greedy, logits for every session every step) over `steps` steps,
/// after a 16-token prompt per session (different for each) and one untimed step.
fn batch_decode_tps(m: &Arc<Model>, args: &SessionArgs, n: usize, steps: usize) -> Result<f64> {
    let v = m.info().n_vocab;
    let mut rng = sutra::rng::Rng::new(99);
    let mut sessions = (0..n).map(|_| session(args, m)).collect::<Result<Vec<_>>>()?;
    let mut logits = vec![0f32; n * v];
    let prompts: Vec<Vec<u32>> =
        (0..n).map(|_| (0..16).map(|_| (rng.next_u64() % v as u64) as u32).collect()).collect();
    let step = |sessions: &mut [Session], toks: &[Vec<u32>], logits: &mut [f32]| {
        let mut refs: Vec<&mut Session> = sessions.iter_mut().collect();
        let views: Vec<&[u32]> = toks.iter().map(|t| &t[..]).collect();
        Session::eval_batch(&mut refs, &views, Some(logits))
    };
    step(&mut sessions, &prompts, &mut logits)?;
    let greedy = |logits: &[f32]| -> Vec<Vec<u32>> {
        logits
            .chunks(v)
            .map(|l| vec![l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(k, _)| k as u32)])
            .collect()
    };
    let toks = greedy(&logits);
    step(&mut sessions, &toks, &mut logits)?;
    let t0 = Instant::now();
    for _ in 0..steps {
        let toks = greedy(&logits);
        step(&mut sessions, &toks, &mut logits)?;
    }
    Ok((n * steps) as f64 / t0.elapsed().as_secs_f64())
}

/// Encode/decode throughput of `tok` on the text of `file` (best of 3, one thread).
fn tokenizer_bench(tok: &Tokenizer, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mb = text.len() as f64 / 1e6;
    let (mut enc, mut dec) = (f64::MAX, f64::MAX);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        ids = tok.encode(&text, false)?;
        enc = enc.min(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        let back = tok.decode(&ids, false)?;
        dec = dec.min(t1.elapsed().as_secs_f64());
        if back.len() != text.len() {
            eprintln!("note: decode(encode(text)) differs from the text (normalization)");
        }
    }
    println!("text:   {} ({:.2} MB)", file.display(), mb);
    println!("tokens: {} ({:.2} bytes/token)", ids.len(), text.len() as f64 / ids.len().max(1) as f64);
    println!("encode: {:.2} MB/s ({:.3} s)", mb / enc, enc);
    println!("decode: {:.2} MB/s ({:.3} s)", mb / dec, dec);
    Ok(())
}

fn cmd_tokenize(a: &TokenizeArgs) -> Result<()> {
    let tok = Tokenizer::from_file(&a.tokenizer)?;
    if let Some(file) = &a.bench {
        return tokenizer_bench(&tok, file);
    }
    // clap requires TEXT unless --bench is given.
    let text = a.text.as_deref().unwrap_or_default();
    let ids = tok.encode(text, a.special)?;
    let ids_s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    println!("{}", ids_s.join(" "));
    for id in &ids {
        let piece = tok.decode_bytes(&[*id])?;
        eprintln!("{id:>8}  {:?}", String::from_utf8_lossy(&piece));
    }
    Ok(())
}

fn cmd_generate(a: &GenerateArgs) -> Result<()> {
    let prompt = match (&a.prompt, &a.file) {
        (_, Some(f)) => std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?,
        (Some(p), None) => p.replace("\\n", "\n"),
        // clap requires one of them.
        (None, None) => String::new(),
    };
    let m = load(a.model.path(), &a.load)?;
    let tok = tokenizer_for(&a.tok, a.model.path())?;
    let mut sampler = sampler_for(&a.sampling)?;
    let params = GenerateParams {
        max_tokens: a.n_predict,
        stop_strings: a.stop.as_ref().map(|s| vec![s.replace("\\n", "\n")]).unwrap_or_default(),
        stop_tokens: default_stop_tokens(&tok),
        add_special_tokens: false,
    };
    let mut s = session(&a.session, &m)?;
    let mut out = std::io::stdout();
    print!("{prompt}");
    let t0 = Instant::now();
    let g = generate(&mut s, &tok, &mut sampler, &prompt, &params, &mut |piece| {
        print!("{piece}");
        out.flush().is_ok()
    })?;
    println!();
    let dt = t0.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt tokens, {} generated in {:.2} s ({:.1} tokens/s), stop: {:?}]",
        g.n_prompt_tokens,
        g.tokens.len(),
        dt,
        g.tokens.len() as f64 / dt,
        g.stop
    );
    Ok(())
}

fn cmd_chat(a: &ChatArgs) -> Result<()> {
    let m = load(a.model.path(), &a.load)?;
    let tok = tokenizer_for(&a.tok, a.model.path())?;
    let mut sampler = sampler_for(&a.sampling)?;
    let (user, bot) = (&a.user, &a.bot);
    let params = GenerateParams {
        max_tokens: a.n_predict,
        stop_strings: vec!["\n\n".into(), format!("\n{user}:")],
        stop_tokens: default_stop_tokens(&tok),
        add_special_tokens: false,
    };
    // One session for the whole conversation: each turn feeds only the new text; the
    // recurrent state carries the history.
    let mut s = session(&a.session, &m)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    eprintln!("chatting with {} ({} layers); empty line or end of input to quit", m.info().arch_name, m.info().n_layer);
    let mut first = true;
    loop {
        print!("{user}: ");
        out.flush().ok();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::io(Path::new("<stdin>"), e))? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let sep = if first { "" } else { "\n\n" };
        first = false;
        let turn = format!("{sep}{user}: {line}\n\n{bot}:");
        print!("{bot}:");
        generate(&mut s, &tok, &mut sampler, &turn, &params, &mut |piece| {
            print!("{piece}");
            out.flush().is_ok()
        })?;
        println!();
    }
    Ok(())
}

fn cmd_perplexity(a: &PerplexityArgs) -> Result<()> {
    let m = load(a.model.path(), &a.load)?;
    let base = match &a.kl_base {
        Some(b) => Some(Arc::new(Model::load(
            b,
            &ModelParams { n_threads: a.load.threads, use_mmap: true, ..Default::default() },
        )?)),
        None => None,
    };
    let tok = tokenizer_for(&a.tok, a.model.path())?;
    let text = std::fs::read_to_string(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let mut tokens = vec![a.bos];
    tokens.extend(tok.encode(&text, false)?);
    let ctx = a.ctx_size.max(1);
    let t0 = Instant::now();
    let mut progress = Progress::new();
    let sc = sutra::score::score_session(session(&a.session, &m)?, base.as_ref(), &tokens, ctx, &mut |end, n_pred| {
        let frac = end as f64 / n_pred.max(1) as f64;
        progress.update(frac, || {
            let bar = ((frac * 40.0) as usize).min(40);
            format!(
                "[{}{}] {end}/{n_pred} tokens, {:.0} tokens/s",
                "#".repeat(bar),
                " ".repeat(40 - bar),
                end as f64 / t0.elapsed().as_secs_f64()
            )
        });
        true
    })?;
    progress.finish();
    println!("tokens: {}", sc.tokens);
    println!("mean_nll: {:.6}", sc.mean_nll);
    println!("perplexity: {:.4}", sc.perplexity());
    println!("bits_per_byte: {:.6}", sc.mean_nll * sc.tokens as f64 / std::f64::consts::LN_2 / text.len() as f64);
    if let (Some(kl), Some(agree)) = (sc.mean_kl, sc.top1_agree) {
        println!("mean_kl: {kl:.6e}");
        println!("top1_agree: {agree:.6}");
    }
    Ok(())
}

/// `sutra lora train`: windows of `--ctx` tokens of the first `1 − eval-frac` of the text,
/// `--batch` rows per step (window `batch·s + b` at step s, cycling), every row from the
/// initial state; the last `eval-frac` is the held-out stream, scored every `--eval-every`
/// steps. Ctrl-C stops after the step in flight and saves the adapter as it then is.
/// `--state` (or `--tune state|both`) tunes the initial state too: it is written as
/// `DIR/state.bin`, a blob for `--init-state` and `sutra_session_state_load`.
fn cmd_lora_train(a: &LoraTrainArgs) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use sutra::train::{TrainParams, Trainer, Tune};
    let m = load(a.model.path(), &a.load)?;
    let tok = tokenizer_for(&a.tok, a.model.path())?;
    let (data, out) = (&a.data, &a.out);
    let text = std::fs::read_to_string(data).map_err(|e| Error::io(data, e))?;
    let ids = tok.encode(&text, false)?;
    let (ctx, batch, steps) = (a.ctx.max(1), a.batch.max(1), a.steps);
    let eval_frac = a.eval_frac;
    if !(0.0..1.0).contains(&eval_frac) {
        return Err(Error::invalid(format!("--eval-frac {eval_frac}: in [0, 1) expected")));
    }
    let n_train = ((ids.len() as f64) * (1.0 - eval_frac as f64)) as usize;
    let (train, held) = ids.split_at(n_train);
    if train.len() < ctx + 1 {
        return Err(Error::invalid(format!(
            "{}: {} training tokens, fewer than one window of --ctx {ctx} + 1",
            data.display(),
            train.len()
        )));
    }
    let mut p = TrainParams { seed: a.seed, ..Default::default() };
    p.rank = a.rank.unwrap_or(p.rank);
    p.alpha = a.alpha.unwrap_or(p.alpha);
    p.optim.lr = a.lr.unwrap_or(p.optim.lr);
    p.optim.weight_decay = a.weight_decay.unwrap_or(p.optim.weight_decay);
    p.grad_clip = a.grad_clip.unwrap_or(p.grad_clip);
    if !a.targets.is_empty() {
        p.targets = Some(a.targets.iter().map(|s| s.trim().to_string()).collect());
    }
    p.bptt_chunk = a.chunk.unwrap_or(p.bptt_chunk);
    p.state_lr = a.state_lr.unwrap_or(p.state_lr);
    p.tune = match (a.state, a.tune) {
        (_, Some(TuneArg::State)) | (true, None) => Tune::State,
        (false, None) | (false, Some(TuneArg::Adapter)) => Tune::Adapter,
        (_, Some(TuneArg::Both)) => Tune::AdapterAndState,
        (true, Some(TuneArg::Adapter)) => {
            return Err(Error::invalid("--state with --tune adapter: say one of them"));
        }
    };
    let init = match &a.init {
        Some(dir) => Some(sutra::Adapter::load(&m, dir)?),
        None => None,
    };
    let mut tr = Trainer::new(&m, init.as_ref(), &p)?;
    if let Some(f) = &a.init_state {
        let blob = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        tr.set_state_blob(&blob).map_err(|e| Error::format(format!("--init-state {}: {e}", f.display())))?;
    }
    let held = &held[..held.len().min(a.eval_tokens)];
    let eval = |tr: &Trainer| -> Result<Option<f64>> {
        if held.len() < 2 {
            return Ok(None);
        }
        let adapter = if tr.params().is_empty() { None } else { Some(Arc::new(tr.adapter()?)) };
        let session = || -> Result<Session> {
            let mut s = Session::new(&m);
            if let Some(a) = &adapter {
                s.set_adapter(a, 1.0)?;
            }
            s.set_state(tr.initial_state())?;
            Ok(s)
        };
        if !p.tune.state() {
            return Ok(Some(sutra::score::score_session(session()?, None, held, 1024, &mut |_, _| true)?.mean_nll));
        }
        // A tuned start state: score windows of --ctx from it, as the rows were trained.
        let (mut sum, mut n) = (0f64, 0usize);
        for w in held.chunks(ctx + 1).filter(|w| w.len() >= 2) {
            let sc = sutra::score::score_session(session()?, None, w, ctx, &mut |_, _| true)?;
            sum += sc.mean_nll * sc.tokens as f64;
            n += sc.tokens;
        }
        Ok(Some(sum / n.max(1) as f64))
    };
    let save = |tr: &Trainer| -> Result<String> {
        let mut wrote = Vec::new();
        if p.tune.adapter() {
            tr.save(out)?;
            wrote.push("adapter".to_string());
        }
        if p.tune.state() {
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            let f = out.join("state.bin");
            sutra::format::write_file_atomic(&f, &tr.state_blob(), || Ok(()))?;
            wrote.push(format!("state {}", f.display()));
        }
        Ok(wrote.join(" and "))
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving falls through to the default (the handler is replaced
        // only once); failing to install it just means Ctrl-C kills the process as usual.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let n_windows = (train.len() - 1) / ctx;
    let every = a.eval_every.max(1);
    let mut held_loss = eval(&tr)?;
    let what = match p.tune {
        Tune::Adapter => "adapter",
        Tune::AdapterAndState => "adapter and initial state",
        Tune::State => "initial state",
    };
    eprintln!(
        "training {} {what} (r {}, {} pairs) on {} tokens of {}, held-out {} tokens",
        m.info().arch_name,
        tr.params().first().map_or(0, |p| p.rank),
        tr.params().len(),
        train.len(),
        data.display(),
        held.len()
    );
    // One line per step: redrawn in place on a terminal, plain lines otherwise.
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut done = 0;
    for s in 0..steps {
        if stop.load(Ordering::SeqCst) {
            eprintln!("\ninterrupted after {done} steps: saving the adapter as it is");
            break;
        }
        let (mut tokens, mut targets) = (Vec::with_capacity(batch * ctx), Vec::with_capacity(batch * ctx));
        for b in 0..batch {
            let j = (batch * s + b) % n_windows;
            let w = &train[ctx * j..ctx * j + ctx + 1];
            tokens.extend_from_slice(&w[..ctx]);
            targets.extend(w[1..].iter().map(|&t| t as i32));
        }
        let loss = tr.step(&tokens, &targets, batch, ctx)?;
        done = s + 1;
        if done % every == 0 || done == steps {
            held_loss = eval(&tr)?;
        }
        let el = t0.elapsed().as_secs_f64();
        let tps = (done * batch * ctx) as f64 / el;
        let eta = el / done as f64 * (steps - done) as f64;
        let line = format!(
            "step {done}/{steps}  loss {loss:.4}  held-out {}  {tps:.0} tokens/s  ETA {:.0}:{:02.0}",
            held_loss.map_or("-".into(), |h| format!("{h:.4}")),
            (eta / 60.0).floor(),
            eta % 60.0
        );
        if tty {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
    let wrote = save(&tr)?;
    println!("wrote {} ({wrote}) after {done} steps", out.display());
    Ok(())
}

/// `sutra lora bench`: training throughput and peak memory at one shape (batch 1, `--ctx`
/// tokens, r `--rank`, every block matrix), beside the same model's prefill of `--ctx`
/// tokens in the same process. Peak RSS is the process's high-water mark (Linux
/// `VmHWM`), mapped weights included.
fn cmd_lora_bench(a: &LoraBenchArgs) -> Result<()> {
    use sutra::train::{TrainParams, Trainer, Tune};
    let m = load(a.model.path(), &a.load)?;
    let (ctx, steps) = (a.ctx.max(2), a.steps.max(1));
    let mut p = TrainParams { rank: a.rank, ..Default::default() };
    p.bptt_chunk = a.chunk.unwrap_or(p.bptt_chunk);
    if a.state {
        p.tune = Tune::AdapterAndState;
    }
    let v = m.info().n_vocab;
    let mut rng = sutra::rng::Rng::new(7);
    let ids: Vec<u32> = (0..=ctx).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let targets: Vec<i32> = ids[1..].iter().map(|&t| t as i32).collect();
    // Prefill of the same tokens is the reference rate. The two are paired: each round
    // times one prefill and one training step back to back, so that a machine's drift hits
    // both, and the medians are reported (after one warm-up round, uncounted).
    let mut s = Session::new(&m);
    let rss_before = peak_rss_kib();
    let mut tr = Trainer::new(&m, None, &p)?;
    let (mut prefill, mut train, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=steps {
        s.reset();
        let t0 = Instant::now();
        s.eval(&ids[..ctx], None)?;
        let pf = ctx as f64 / t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        tr.step(&ids[..ctx], &targets, 1, ctx)?;
        let tt = ctx as f64 / t0.elapsed().as_secs_f64();
        if round > 0 {
            prefill.push(pf);
            train.push(tt);
            ratio.push(tt / pf);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let (prefill, train, ratio) = (median(&mut prefill), median(&mut train), median(&mut ratio));
    let i = m.info();
    println!(
        "model: {} {} layers x {} ({} params, {:?}), {} threads",
        i.arch_name,
        i.n_layer,
        i.n_embd,
        i.n_params,
        i.weight_dtype,
        m.n_threads()
    );
    println!("train: ctx {ctx}, batch 1, r {}, bptt chunk {}, {} pairs", p.rank, p.bptt_chunk, tr.params().len());
    println!("prefill_tokens_per_s: {prefill:.1}");
    println!("train_tokens_per_s: {train:.1}");
    println!("train_over_prefill: {ratio:.3}");
    match (rss_before, peak_rss_kib()) {
        (Some(b), Some(a)) => {
            println!("peak_rss_mib: {:.1}", a as f64 / 1024.0);
            println!("peak_rss_before_training_mib: {:.1}", b as f64 / 1024.0);
        }
        _ => println!("peak_rss_mib: unknown (no /proc/self/status)"),
    }
    Ok(())
}

/// The process's peak resident set (`VmHWM` of /proc/self/status) in KiB, where there is one.
fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cmd_lora_merge(a: &LoraMergeArgs) -> Result<()> {
    let (model, specs) = match &a.model {
        Some(m) => (m.clone(), &a.items[..]),
        None => (PathBuf::from(&a.items[0]), &a.items[1..]),
    };
    if specs.is_empty() {
        return Err(Error::invalid(
            "at least one ADAPTER[:SCALE] is required after MODEL; see sutra lora merge --help",
        ));
    }
    let list: Vec<(PathBuf, f32)> = specs.iter().map(|s| path_scale(s)).collect();
    let dtype = match a.dtype {
        MergeDType::F32 => DType::F32,
        MergeDType::Bf16 => DType::BF16,
    };
    sutra::lora::merge(&model, &list, &a.out, dtype)?;
    println!("wrote {} ({} adapter(s) merged)", a.out.display(), list.len());
    Ok(())
}

fn cmd_quantize(a: &QuantizeArgs) -> Result<()> {
    use sutra::quant::{quantize_model, Method, QuantType, QuantizeParams};
    let (input, output) = (&a.input, &a.output);
    let p = QuantizeParams {
        qtype: match a.qtype {
            QType::Q8 => QuantType::Q8,
            QType::Q4 => QuantType::Q4,
        },
        group: a.group,
        method: match a.method {
            QMethod::Rtn => Method::Rtn,
            QMethod::Awq => Method::Awq,
        },
        calib_file: a.calib.clone(),
        calib_tokens: a.calib_tokens,
        tokenizer: a.tok.tokenizer.clone(),
        n_threads: a.threads,
        keep: a.keep.iter().filter(|k| !k.is_empty()).cloned().collect(),
    };
    let t0 = Instant::now();
    let mut progress = Progress::new();
    quantize_model(input, output, &p, &mut |f| {
        progress.update(f as f64, || format!("quantizing: {:3.0}%", f * 100.0));
        true
    })?;
    progress.finish();
    let size = std::fs::metadata(output).map_err(|e| Error::io(output, e))?.len();
    let src = std::fs::metadata(input).map_err(|e| Error::io(input, e))?.len();
    let m = Model::load(output, &ModelParams::default())?;
    println!(
        "wrote {} ({}, {:.2}x smaller than the input) in {:.2} s; {:.3} bits per parameter overall",
        output.display(),
        human(size),
        src as f64 / size as f64,
        t0.elapsed().as_secs_f64(),
        size as f64 * 8.0 / m.info().n_params as f64
    );
    Ok(())
}

fn cmd_convert(a: &ConvertArgs) -> Result<()> {
    let t0 = Instant::now();
    let n = sutra::format::convert(&a.input, &a.output)?;
    // What was written loads as the same model.
    let m = Model::load(&a.output, &ModelParams::default())?;
    let size = std::fs::metadata(&a.output).map_err(|e| Error::io(&a.output, e))?.len();
    println!(
        "wrote {} ({n} tensors, {}, {}) in {:.2} s",
        a.output.display(),
        human(size),
        m.info().arch_name,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The command line with `--temperature` (the earlier spelling) as `--temp`. It is rewritten
/// here rather than made a clap alias so that a misspelling such as `--temprature` is told
/// the flag's name, `--temp`, and not the alias nearest to it. Nothing after `--` changes.
fn old_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut rest = false;
    args.map(|a| {
        if rest {
            return a;
        }
        rest = a == "--";
        match a.to_str() {
            Some("--temperature") => "--temp".into(),
            Some(s) if s.starts_with("--temperature=") => format!("--temp={}", &s["--temperature=".len()..]).into(),
            _ => a,
        }
    })
    .collect()
}

fn main() -> ExitCode {
    // `sutra info M | head`: a closed pipe ends the program quietly, not in a panic.
    sutra::ffi::restore_default_sigpipe();
    // Usage errors (unknown flag, missing argument, bad value) exit 2 with clap's message;
    // --help and --version exit 0.
    let cli = Cli::parse_from(old_spellings(std::env::args_os()));
    let r = match &cli.cmd {
        Cmd::Info(a) => cmd_info(a),
        Cmd::Logits(a) => cmd_logits(a),
        Cmd::Synth(a) => cmd_synth(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Tokenize(a) => cmd_tokenize(a),
        Cmd::Generate(a) => cmd_generate(a),
        Cmd::Chat(a) => cmd_chat(a),
        Cmd::Perplexity(a) => cmd_perplexity(a),
        Cmd::Quantize(a) => cmd_quantize(a),
        Cmd::Convert(a) => cmd_convert(a),
        Cmd::Lora(LoraCmd::Train(a)) => cmd_lora_train(a),
        Cmd::Lora(LoraCmd::Bench(a)) => cmd_lora_bench(a),
        Cmd::Lora(LoraCmd::Merge(a)) => cmd_lora_merge(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sutra: {e}");
            ExitCode::from(1)
        }
    }
}
