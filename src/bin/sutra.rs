//! `sutra`: the command-line tool of libsutra.
//!
//! ```text
//! sutra info MODEL | --system
//! sutra logits MODEL --tokens 1,2,3 [--prefill] [--threads N] --out FILE.safetensors
//! sutra synth --arch rwkv7 --layers L --width D --vocab V [--head-size N] [--dtype f32|bf16|f16] [--seed S] --out FILE
//! sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--batch N] [--no-mmap]
//! sutra tokenize TOKENIZER "text" [--special]
//! sutra generate MODEL [--tokenizer T] --prompt "..." [-n 200] [--temp 0.8] [--top-p 0.9] [--top-k 0] [--seed S]
//! sutra chat MODEL [--tokenizer T] [--temp 0.8] [--top-p 0.9] [--seed S]
//! sutra perplexity MODEL [--tokenizer T] --file TEXT [--bos 0] [--ctx 1024] [--kl-base BASE]
//! sutra quantize IN OUT --type q8|q4 [--group 64] [--method rtn|awq] [--calib TEXT] [--calib-tokens N]
//! sutra lora train MODEL --data TEXT --out DIR [--rank --alpha --targets --lr --steps --ctx --batch --seed --eval-frac --state]
//! sutra lora bench MODEL [--ctx 512 --rank 8 --steps 3]
//! sutra lora merge MODEL ADAPTER[:SCALE]... --out FILE [--dtype f32|bf16]
//! ```
//!
//! `generate`, `chat`, `perplexity`, `bench` and `logits` take `--lora DIR[:SCALE]` (repeatable).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::tensor::DType;
use sutra::{generate, Error, GenerateParams, Model, ModelParams, Result, Sampler, Session, Stage, Tokenizer};

const USAGE: &str = "usage:
  sutra info MODEL | --system                     (--system: CPU features found, kernels chosen)
  sutra logits MODEL --tokens 1,2,3 [--prefill] [--threads N] --out FILE.safetensors
  sutra synth --arch rwkv4|rwkv5|rwkv6|rwkv7|mamba1|mamba2 --layers L --width D --vocab V [--head-size 64] [--dtype f32|bf16|f16] [--seed S] --out FILE
  sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--batch N] [--no-mmap]
  sutra tokenize TOKENIZER TEXT [--special]      (or --bench FILE: encode/decode MB/s)
  sutra generate MODEL [--tokenizer T] --prompt TEXT [-n 200] [--temp 0.8] [--top-p 0.9] [--top-k 0] [--seed S]
  sutra chat MODEL [--tokenizer T] [--temp 0.8] [--top-p 0.9] [--seed S] [-n 300]
  sutra perplexity MODEL [--tokenizer T] --file TEXT [--bos 0] [--ctx 1024] [--kl-base BASE]
  sutra quantize IN OUT --type q8|q4 [--group 32|64|128] [--method rtn|awq] [--calib TEXT --calib-tokens N] [--tokenizer T] [--keep NAME,...]
  sutra lora train MODEL --data TEXT --out DIR [--rank 8 --alpha 16 --targets att.key,... --lr 1e-3 --steps 100 --ctx 128 --batch 4 --seed 0 --eval-frac 0.1 --eval-every 20 --init DIR --grad-clip 0 --chunk 256]
                  [--state | --tune adapter|state|both] [--state-lr LR] [--init-state FILE]   (state tuning: writes DIR/state.bin)
  sutra lora bench MODEL [--ctx 512 --rank 8 --steps 3 --chunk 256 --threads N] [--state]   (training tokens/s and peak RSS beside prefill)
  sutra lora merge MODEL ADAPTER[:SCALE]... --out FILE [--dtype f32|bf16]   (a quantized base is written dequantized)
generate, chat, perplexity, bench and logits take --lora DIR[:SCALE] (repeatable): PEFT adapters applied at run time;
generate, chat and perplexity take --init-state FILE: start from a saved state blob (a tuned state from --state).
Every command that loads MODEL takes --threads N, --no-mmap and --check-finite (scan the weights for NaN/Inf).
A tokenizer.json or rwkv_vocab_v20230424.txt next to MODEL is used when --tokenizer is not given.";

/// Parsed command line: positional arguments and `--flag [value]` options.
struct Args {
    pos: Vec<String>,
    opts: HashMap<String, String>,
    /// Every `--flag value` in order (repeatable flags such as `--lora`).
    all: Vec<(String, String)>,
}

/// Options that take no value.
const SWITCHES: &[&str] = &["prefill", "no-mmap", "special", "check-finite", "system", "state"];

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> Result<Args> {
        let mut pos = Vec::new();
        let mut opts = HashMap::new();
        let mut all = Vec::new();
        let mut it = raw.peekable();
        while let Some(a) = it.next() {
            let a = if a == "-n" { "--n".to_string() } else { a };
            if let Some(name) = a.strip_prefix("--") {
                if SWITCHES.contains(&name) {
                    opts.insert(name.to_string(), String::new());
                } else {
                    let v = it.next().ok_or_else(|| Error::invalid(format!("--{name} needs a value")))?;
                    all.push((name.to_string(), v.clone()));
                    opts.insert(name.to_string(), v);
                }
            } else {
                pos.push(a);
            }
        }
        Ok(Args { pos, opts, all })
    }

    /// Every value given to a repeatable flag, in order.
    fn values(&self, name: &str) -> Vec<&str> {
        self.all.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn flag(&self, name: &str) -> bool {
        self.opts.contains_key(name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.opts.get(name).map(|s| s.as_str())
    }

    fn num(&self, name: &str, default: usize) -> Result<usize> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::invalid(format!("--{name} {v}: a non-negative integer expected"))),
        }
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| Error::invalid(format!("--{name} is required\n{USAGE}")))
    }

    fn model_path(&self) -> Result<PathBuf> {
        self.pos.get(1).map(PathBuf::from).ok_or_else(|| Error::invalid(format!("MODEL is required\n{USAGE}")))
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::invalid(format!("--{name} {v}: a number expected"))),
        }
    }
}

/// `PATH[:SCALE]` (scale 1 when absent).
fn path_scale(spec: &str) -> Result<(PathBuf, f32)> {
    match spec.rsplit_once(':') {
        Some((p, sc)) if !p.is_empty() && sc.parse::<f32>().is_ok() => {
            Ok((PathBuf::from(p), sc.parse().unwrap_or(1.0)))
        }
        _ => Ok((PathBuf::from(spec), 1.0)),
    }
}

/// The adapters of every `--lora DIR[:SCALE]`, loaded for `m`.
fn adapters(args: &Args, m: &Model) -> Result<Vec<(Arc<sutra::Adapter>, f32)>> {
    args.values("lora")
        .into_iter()
        .map(|spec| {
            let (p, sc) = path_scale(spec)?;
            Ok((Arc::new(sutra::Adapter::load(m, &p)?), sc))
        })
        .collect()
}

/// A new session of `m` with the `--lora` adapters attached, at the state blob of
/// `--init-state FILE` when given (a tuned initial state from `sutra lora train --state`).
fn session(args: &Args, m: &Arc<Model>) -> Result<Session> {
    let mut s = Session::new(m);
    for (a, sc) in adapters(args, m)? {
        s.set_adapter(&a, sc)?;
    }
    if let Some(f) = args.get("init-state") {
        let blob = std::fs::read(f).map_err(|e| Error::io(Path::new(f), e))?;
        s.load_state(&blob).map_err(|e| Error::format(format!("--init-state {f}: {e}")))?;
    }
    Ok(s)
}

fn load(args: &Args) -> Result<Arc<Model>> {
    let params = ModelParams {
        n_threads: args.num("threads", 0)?,
        use_mmap: !args.flag("no-mmap"),
        check_finite: args.flag("check-finite"),
    };
    Ok(Arc::new(Model::load(&args.model_path()?, &params)?))
}

/// The tokenizer given by --tokenizer, or the one next to the model.
fn tokenizer_for(args: &Args) -> Result<Tokenizer> {
    if let Some(t) = args.get("tokenizer") {
        return Tokenizer::from_file(Path::new(t));
    }
    let model = args.model_path()?;
    let dir = model.parent().unwrap_or(Path::new("."));
    for name in ["tokenizer.json", "rwkv_vocab_v20230424.txt"] {
        let p = dir.join(name);
        if p.exists() {
            return Tokenizer::from_file(&p);
        }
    }
    Err(Error::invalid(format!("no tokenizer: give --tokenizer, or put tokenizer.json next to {}", model.display())))
}

/// The sampler the command line describes: top-k, top-p, temperature, draw (greedy at --temp 0).
fn sampler_for(args: &Args) -> Result<Sampler> {
    let seed = match args.get("seed") {
        Some(_) => args.num("seed", 0)? as u64,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    };
    let mut s = Sampler::new(seed);
    let temp = args.float("temp", 0.8)?;
    if temp <= 0.0 {
        s.add(Stage::Greedy)?;
        return Ok(s);
    }
    if args.float("presence", 0.0)? != 0.0 || args.float("frequency", 0.0)? != 0.0 {
        s.add(Stage::RwkvPresence {
            presence: args.float("presence", 0.0)?,
            frequency: args.float("frequency", 0.0)?,
            decay: args.float("decay", 0.996)?,
        })?;
    }
    s.add(Stage::TopK(args.num("top-k", 0)?))?;
    s.add(Stage::TopP { p: args.float("top-p", 0.9)?, min_keep: 1 })?;
    s.add(Stage::MinP(args.float("min-p", 0.0)?))?;
    s.add(Stage::Temperature(temp))?;
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

fn cmd_info(args: &Args) -> Result<()> {
    if args.get("system").is_some() {
        println!("{}", sutra::kernels::dot::system_info());
        return Ok(());
    }
    let m = load(args)?;
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
    Ok(())
}

fn cmd_logits(args: &Args) -> Result<()> {
    let m = load(args)?;
    let tokens: Vec<u32> = args
        .required("tokens")?
        .split(',')
        .map(|t| t.trim().parse::<u32>().map_err(|_| Error::invalid(format!("--tokens: '{t}' is not a token id"))))
        .collect::<Result<_>>()?;
    let out = PathBuf::from(args.required("out")?);
    let v = m.info().n_vocab;
    let mut s = session(args, &m)?;
    let (rows, logits) = if args.flag("prefill") {
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
    sutra::format::safetensors::write(&out, &[("logits".into(), DType::F32, vec![rows, v], bytes)], None)?;
    eprintln!("wrote logits [{rows}, {v}] to {}", out.display());
    Ok(())
}

fn cmd_synth(args: &Args) -> Result<()> {
    let dtype = match args.get("dtype").unwrap_or("f32") {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => return Err(Error::invalid(format!("--dtype {other}: f32, bf16 or f16 expected"))),
    };
    let spec = SynthSpec {
        arch: args.required("arch")?.to_string(),
        n_layer: args.num("layers", 0)?,
        n_embd: args.num("width", 0)?,
        n_vocab: args.num("vocab", 0)?,
        head_size: args.num("head-size", 64)?,
        dtype,
        seed: args.num("seed", 42)? as u64,
    };
    let out = PathBuf::from(args.required("out")?);
    synthesize(&spec, &out)?;
    eprintln!("wrote {} ({:?})", out.display(), spec);
    Ok(())
}

/// Peak resident set size of this process, from /proc (Linux); None elsewhere.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cmd_bench(args: &Args) -> Result<()> {
    let n_prompt = args.num("prompt", 512)?;
    let n_gen = args.num("gen", 128)?;
    let t0 = Instant::now();
    let m = load(args)?;
    let load_s = t0.elapsed().as_secs_f64();
    let i = m.info().clone();
    let v = i.n_vocab;
    let mut rng = sutra::rng::Rng::new(1234);
    let prompt: Vec<u32> = (0..n_prompt.max(1)).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let mut s = session(args, &m)?;
    let mut logits = vec![0f32; v];
    // Warm-up: touch every weight page once.
    s.eval_stepwise(&prompt[..1], Some(&mut logits))?;
    s.reset();
    let t1 = Instant::now();
    s.eval(&prompt, Some(&mut logits))?;
    let prefill_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    for _ in 0..n_gen {
        let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(k, _)| k as u32);
        s.eval_stepwise(&[next], Some(&mut logits))?;
    }
    let gen_s = t2.elapsed().as_secs_f64();
    let ms_tok = 1e3 * gen_s / n_gen.max(1) as f64;
    println!(
        "model:        {} {} layers x {} vocab {} ({})",
        i.arch_name,
        i.n_layer,
        i.n_embd,
        i.n_vocab,
        i.weight_dtype.name()
    );
    println!("threads:      {}   kernels: {:?}", m.n_threads(), sutra::kernels::isa());
    println!("load:         {:.1} ms", load_s * 1e3);
    println!(
        "prefill:      {:.1} tokens/s ({} tokens in {:.3} s)",
        prompt.len() as f64 / prefill_s,
        prompt.len(),
        prefill_s
    );
    println!("decode:       {:.2} ms/token ({:.1} tokens/s, {} tokens)", ms_tok, 1e3 / ms_tok, n_gen);
    println!("weights read: {} per token", human(i.bytes_per_token));
    println!("bandwidth:    {:.2} GB/s effective while decoding", i.bytes_per_token as f64 / (ms_tok / 1e3) / 1e9);
    let n_batch = args.num("batch", 0)?;
    if n_batch > 0 {
        let tps = batch_decode_tps(&m, args, n_batch, n_gen.max(1))?;
        println!("batch: {n_batch} sessions, {tps:.1} tokens/s");
    }
    if let Some(rss) = peak_rss() {
        println!("peak RSS:     {}", human(rss));
    }
    Ok(())
}

/// Aggregate decode throughput of `n` sessions advanced together by [`Session::eval_batch`]
/// (one token each per step, greedy, logits for every session every step) over `steps` steps,
/// after a 16-token prompt per session (different for each) and one untimed step.
fn batch_decode_tps(m: &Arc<Model>, args: &Args, n: usize, steps: usize) -> Result<f64> {
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

fn cmd_tokenize(args: &Args) -> Result<()> {
    let path = args.pos.get(1).ok_or_else(|| Error::invalid(format!("TOKENIZER is required\n{USAGE}")))?;
    let tok = Tokenizer::from_file(Path::new(path))?;
    if let Some(file) = args.get("bench") {
        return tokenizer_bench(&tok, Path::new(file));
    }
    let text = args.pos.get(2).ok_or_else(|| Error::invalid(format!("text is required\n{USAGE}")))?;
    let ids = tok.encode(text, args.flag("special"))?;
    let ids_s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    println!("{}", ids_s.join(" "));
    for id in &ids {
        let piece = tok.decode_bytes(&[*id])?;
        eprintln!("{id:>8}  {:?}", String::from_utf8_lossy(&piece));
    }
    Ok(())
}

fn cmd_generate(args: &Args) -> Result<()> {
    let m = load(args)?;
    let tok = tokenizer_for(args)?;
    let mut sampler = sampler_for(args)?;
    let prompt = args.required("prompt")?.replace("\\n", "\n");
    let params = GenerateParams {
        max_tokens: args.num("n", 200)?,
        stop_strings: args.get("stop").map(|s| vec![s.replace("\\n", "\n")]).unwrap_or_default(),
        stop_tokens: default_stop_tokens(&tok),
        add_special_tokens: false,
    };
    let mut s = session(args, &m)?;
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

fn cmd_chat(args: &Args) -> Result<()> {
    let m = load(args)?;
    let tok = tokenizer_for(args)?;
    let mut sampler = sampler_for(args)?;
    let user = args.get("user").unwrap_or("User").to_string();
    let bot = args.get("bot").unwrap_or("Assistant").to_string();
    let params = GenerateParams {
        max_tokens: args.num("n", 300)?,
        stop_strings: vec!["\n\n".into(), format!("\n{user}:")],
        stop_tokens: default_stop_tokens(&tok),
        add_special_tokens: false,
    };
    // One session for the whole conversation: each turn feeds only the new text; the
    // recurrent state carries the history.
    let mut s = session(args, &m)?;
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

fn cmd_perplexity(args: &Args) -> Result<()> {
    let m = load(args)?;
    let base = match args.get("kl-base") {
        Some(b) => Some(Arc::new(Model::load(
            Path::new(b),
            &ModelParams { n_threads: args.num("threads", 0)?, use_mmap: true, ..Default::default() },
        )?)),
        None => None,
    };
    let tok = tokenizer_for(args)?;
    let path = PathBuf::from(args.required("file")?);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut tokens = vec![args.num("bos", 0)? as u32];
    tokens.extend(tok.encode(&text, false)?);
    let ctx = args.num("ctx", 1024)?.max(1);
    let t0 = Instant::now();
    let sc = sutra::score::score_session(session(args, &m)?, base.as_ref(), &tokens, ctx, &mut |end, n_pred| {
        let bar = (end as f64 / n_pred as f64 * 40.0) as usize;
        eprint!(
            "\r[{}{}] {end}/{n_pred} tokens, {:.0} tokens/s",
            "#".repeat(bar),
            " ".repeat(40 - bar),
            end as f64 / t0.elapsed().as_secs_f64()
        );
        true
    })?;
    eprintln!();
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
fn cmd_lora_train(args: &Args) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use sutra::train::{TrainParams, Trainer, Tune};
    let m = Arc::new(Model::load(
        &PathBuf::from(args.pos.get(2).ok_or_else(|| Error::invalid(format!("MODEL is required\n{USAGE}")))?),
        &ModelParams { n_threads: args.num("threads", 0)?, ..Default::default() },
    )?);
    let sub = Args { pos: args.pos[1..].to_vec(), opts: args.opts.clone(), all: args.all.clone() };
    let tok = tokenizer_for(&sub)?;
    let data = PathBuf::from(args.required("data")?);
    let out = PathBuf::from(args.required("out")?);
    let text = std::fs::read_to_string(&data).map_err(|e| Error::io(&data, e))?;
    let ids = tok.encode(&text, false)?;
    let (ctx, batch, steps) = (args.num("ctx", 128)?.max(1), args.num("batch", 4)?.max(1), args.num("steps", 100)?);
    let eval_frac = args.float("eval-frac", 0.1)?;
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
    let mut p = TrainParams { seed: args.num("seed", 0)? as u64, ..Default::default() };
    p.rank = args.num("rank", p.rank)?;
    p.alpha = args.float("alpha", p.alpha)?;
    p.optim.lr = args.float("lr", p.optim.lr)?;
    p.optim.weight_decay = args.float("weight-decay", p.optim.weight_decay)?;
    p.grad_clip = args.float("grad-clip", p.grad_clip)?;
    p.targets = args.get("targets").map(|t| t.split(',').map(|s| s.trim().to_string()).collect());
    p.bptt_chunk = args.num("chunk", p.bptt_chunk)?;
    p.state_lr = args.float("state-lr", p.state_lr)?;
    p.tune = match (args.flag("state"), args.get("tune")) {
        (true, None) | (_, Some("state")) => Tune::State,
        (_, Some("both")) => Tune::AdapterAndState,
        (false, None) | (false, Some("adapter")) => Tune::Adapter,
        (true, Some(t)) => return Err(Error::invalid(format!("--state with --tune {t}: say one of them"))),
        (_, Some(t)) => return Err(Error::invalid(format!("--tune {t}: adapter, state or both expected"))),
    };
    let init = match args.get("init") {
        Some(dir) => Some(sutra::Adapter::load(&m, Path::new(dir))?),
        None => None,
    };
    let mut tr = Trainer::new(&m, init.as_ref(), &p)?;
    if let Some(f) = args.get("init-state") {
        let blob = std::fs::read(f).map_err(|e| Error::io(Path::new(f), e))?;
        tr.set_state_blob(&blob).map_err(|e| Error::format(format!("--init-state {f}: {e}")))?;
    }
    let held = &held[..held.len().min(args.num("eval-tokens", 4096)?)];
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
            tr.save(&out)?;
            wrote.push("adapter".to_string());
        }
        if p.tune.state() {
            std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
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
    let every = args.num("eval-every", 20)?.max(1);
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
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
    eprintln!();
    let wrote = save(&tr)?;
    println!("wrote {} ({wrote}) after {done} steps", out.display());
    Ok(())
}

/// `sutra lora bench`: training throughput and peak memory at one shape (batch 1, `--ctx`
/// tokens, r `--rank`, every block matrix), beside the same model's prefill of `--ctx`
/// tokens in the same process. Peak RSS is the process's high-water mark (Linux
/// `VmHWM`), mapped weights included.
fn cmd_lora_bench(args: &Args) -> Result<()> {
    use sutra::train::{TrainParams, Trainer, Tune};
    let path = PathBuf::from(args.pos.get(2).ok_or_else(|| Error::invalid(format!("MODEL is required\n{USAGE}")))?);
    let m = Arc::new(Model::load(&path, &ModelParams { n_threads: args.num("threads", 0)?, ..Default::default() })?);
    let (ctx, steps) = (args.num("ctx", 512)?.max(2), args.num("steps", 3)?.max(1));
    let mut p = TrainParams { rank: args.num("rank", 8)?, ..Default::default() };
    p.bptt_chunk = args.num("chunk", p.bptt_chunk)?;
    if args.flag("state") {
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

fn cmd_lora(args: &Args) -> Result<()> {
    match args.pos.get(1).map(String::as_str) {
        Some("train") => cmd_lora_train(args),
        Some("bench") => cmd_lora_bench(args),
        Some("merge") => {
            let model =
                PathBuf::from(args.pos.get(2).ok_or_else(|| Error::invalid(format!("MODEL is required\n{USAGE}")))?);
            let specs = &args.pos[3..];
            if specs.is_empty() {
                return Err(Error::invalid(format!("at least one ADAPTER[:SCALE] is required\n{USAGE}")));
            }
            let list = specs.iter().map(|s| path_scale(s)).collect::<Result<Vec<_>>>()?;
            let out = PathBuf::from(args.required("out")?);
            let dtype = match args.get("dtype").unwrap_or("f32") {
                "f32" => DType::F32,
                "bf16" => DType::BF16,
                other => return Err(Error::invalid(format!("--dtype {other}: f32 or bf16 expected"))),
            };
            sutra::lora::merge(&model, &list, &out, dtype)?;
            println!("wrote {} ({} adapter(s) merged)", out.display(), list.len());
            Ok(())
        }
        other => {
            Err(Error::invalid(format!("sutra lora {}: train, bench or merge expected\n{USAGE}", other.unwrap_or(""))))
        }
    }
}

fn cmd_quantize(args: &Args) -> Result<()> {
    use sutra::quant::{quantize_model, Method, QuantType, QuantizeParams};
    let input = PathBuf::from(args.pos.get(1).ok_or_else(|| Error::invalid(format!("IN is required\n{USAGE}")))?);
    let output = PathBuf::from(args.pos.get(2).ok_or_else(|| Error::invalid(format!("OUT is required\n{USAGE}")))?);
    let qtype = match args.required("type")? {
        "q8" => QuantType::Q8,
        "q4" => QuantType::Q4,
        other => return Err(Error::invalid(format!("--type {other}: q8 or q4 expected"))),
    };
    let method = match args.get("method").unwrap_or("rtn") {
        "rtn" => Method::Rtn,
        "awq" => Method::Awq,
        other => return Err(Error::invalid(format!("--method {other}: rtn or awq expected"))),
    };
    let p = QuantizeParams {
        qtype,
        group: args.num("group", 64)?,
        method,
        calib_file: args.get("calib").map(PathBuf::from),
        calib_tokens: args.num("calib-tokens", 8192)?,
        tokenizer: args.get("tokenizer").map(PathBuf::from),
        n_threads: args.num("threads", 0)?,
        keep: args.get("keep").map(|k| k.split(',').map(String::from).collect()).unwrap_or_default(),
    };
    let t0 = Instant::now();
    quantize_model(&input, &output, &p, &mut |f| {
        eprint!("\rquantizing: {:3.0}%", f * 100.0);
        true
    })?;
    eprintln!();
    let size = std::fs::metadata(&output).map_err(|e| Error::io(&output, e))?.len();
    let src = std::fs::metadata(&input).map_err(|e| Error::io(&input, e))?.len();
    let m = Model::load(&output, &ModelParams::default())?;
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

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sutra: {e}");
            return ExitCode::from(2);
        }
    };
    // pos[0] is the program, pos[1] the command; sub-commands see MODEL at pos[1].
    let cmd = args.pos.get(1).cloned().unwrap_or_default();
    let sub = Args { pos: args.pos.get(1..).unwrap_or_default().to_vec(), opts: args.opts, all: args.all };
    let r = match cmd.as_str() {
        "info" => cmd_info(&sub),
        "logits" => cmd_logits(&sub),
        "synth" => cmd_synth(&sub),
        "bench" => cmd_bench(&sub),
        "tokenize" => cmd_tokenize(&sub),
        "generate" => cmd_generate(&sub),
        "chat" => cmd_chat(&sub),
        "perplexity" => cmd_perplexity(&sub),
        "quantize" => cmd_quantize(&sub),
        "lora" => cmd_lora(&sub),
        "" | "help" | "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(Error::invalid(format!("unknown command '{other}'\n{USAGE}"))),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sutra: {e}");
            ExitCode::from(1)
        }
    }
}
