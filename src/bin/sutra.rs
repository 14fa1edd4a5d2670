//! `sutra`: the command-line tool of libsutra.
//!
//! ```text
//! sutra info MODEL | --system
//! sutra logits MODEL --tokens 1,2,3 [--prefill] [--threads N] --out FILE.safetensors
//! sutra synth --arch rwkv7 --layers L --width D --vocab V [--head-size N] [--dtype f32|bf16|f16] [--seed S] --out FILE
//! sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--no-mmap]
//! sutra tokenize TOKENIZER "text" [--special]
//! sutra generate MODEL [--tokenizer T] --prompt "..." [-n 200] [--temp 0.8] [--top-p 0.9] [--top-k 0] [--seed S]
//! sutra chat MODEL [--tokenizer T] [--temp 0.8] [--top-p 0.9] [--seed S]
//! sutra perplexity MODEL [--tokenizer T] --file TEXT [--bos 0] [--ctx 1024] [--kl-base BASE]
//! sutra quantize IN OUT --type q8|q4 [--group 64] [--method rtn|awq] [--calib TEXT] [--calib-tokens N]
//! ```

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
  sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--no-mmap]
  sutra tokenize TOKENIZER TEXT [--special]      (or --bench FILE: encode/decode MB/s)
  sutra generate MODEL [--tokenizer T] --prompt TEXT [-n 200] [--temp 0.8] [--top-p 0.9] [--top-k 0] [--seed S]
  sutra chat MODEL [--tokenizer T] [--temp 0.8] [--top-p 0.9] [--seed S] [-n 300]
  sutra perplexity MODEL [--tokenizer T] --file TEXT [--bos 0] [--ctx 1024] [--kl-base BASE]
  sutra quantize IN OUT --type q8|q4 [--group 32|64|128] [--method rtn|awq] [--calib TEXT --calib-tokens N] [--tokenizer T] [--keep NAME,...]
A tokenizer.json or rwkv_vocab_v20230424.txt next to MODEL is used when --tokenizer is not given.";

/// Parsed command line: positional arguments and `--flag [value]` options.
struct Args {
    pos: Vec<String>,
    opts: HashMap<String, String>,
}

/// Options that take no value.
const SWITCHES: &[&str] = &["prefill", "no-mmap", "special", "system"];

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> Result<Args> {
        let mut pos = Vec::new();
        let mut opts = HashMap::new();
        let mut it = raw.peekable();
        while let Some(a) = it.next() {
            let a = if a == "-n" { "--n".to_string() } else { a };
            if let Some(name) = a.strip_prefix("--") {
                if SWITCHES.contains(&name) {
                    opts.insert(name.to_string(), String::new());
                } else {
                    let v = it.next().ok_or_else(|| Error::invalid(format!("--{name} needs a value")))?;
                    opts.insert(name.to_string(), v);
                }
            } else {
                pos.push(a);
            }
        }
        Ok(Args { pos, opts })
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

fn load(args: &Args) -> Result<Arc<Model>> {
    let params = ModelParams { n_threads: args.num("threads", 0)?, use_mmap: !args.flag("no-mmap") };
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
    let mut s = Session::new(&m);
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
    let mut rng = sutra::format::synth::Rng::new(1234);
    let prompt: Vec<u32> = (0..n_prompt.max(1)).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let mut s = Session::new(&m);
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
    if let Some(rss) = peak_rss() {
        println!("peak RSS:     {}", human(rss));
    }
    Ok(())
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
    let mut s = Session::new(&m);
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
    let mut s = Session::new(&m);
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

/// log-softmax of `row` into `out`.
fn log_softmax(row: &[f32], out: &mut [f64]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln() + max;
    out.iter_mut().zip(row).for_each(|(o, &l)| *o = l as f64 - lse);
}

fn cmd_perplexity(args: &Args) -> Result<()> {
    let m = load(args)?;
    let base = match args.get("kl-base") {
        Some(b) => Some(Arc::new(Model::load(
            Path::new(b),
            &ModelParams { n_threads: args.num("threads", 0)?, use_mmap: true },
        )?)),
        None => None,
    };
    let tok = tokenizer_for(args)?;
    let path = PathBuf::from(args.required("file")?);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut tokens = vec![args.num("bos", 0)? as u32];
    tokens.extend(tok.encode(&text, false)?);
    let ctx = args.num("ctx", 1024)?.max(1);
    let v = m.info().n_vocab;
    if let Some(b) = &base {
        if b.info().n_vocab != v {
            return Err(Error::invalid(format!("--kl-base has vocabulary {}, the model {v}", b.info().n_vocab)));
        }
    }
    let mut s = Session::new(&m);
    let mut sb = base.as_ref().map(Session::new);
    let mut logits = vec![0f32; ctx * v];
    let mut base_logits = vec![0f32; if base.is_some() { ctx * v } else { 0 }];
    let (mut lp, mut lq) = (vec![0f64; v], vec![0f64; v]);
    let (mut nll, mut kl, mut agree) = (0f64, 0f64, 0usize);
    let n_pred = tokens.len() - 1;
    let t0 = Instant::now();
    // The whole file is one stream from the zero state, fed in pieces of `ctx` tokens with
    // the state carried over; every token after the first is scored.
    for start in (0..n_pred).step_by(ctx) {
        let end = (start + ctx).min(n_pred);
        let piece = &tokens[start..end];
        s.eval_all_logits(piece, &mut logits[..piece.len() * v])?;
        if let Some(sb) = sb.as_mut() {
            sb.eval_all_logits(piece, &mut base_logits[..piece.len() * v])?;
        }
        for (i, row) in logits[..piece.len() * v].chunks(v).enumerate() {
            let target = tokens[start + i + 1] as usize;
            log_softmax(row, &mut lq);
            nll -= lq[target];
            if sb.is_some() {
                let brow = &base_logits[i * v..(i + 1) * v];
                log_softmax(brow, &mut lp);
                // KL(base || model) = Σ p_base (log p_base − log p_model)
                kl += lp.iter().zip(&lq).map(|(&a, &b)| a.exp() * (a - b)).sum::<f64>();
                let am = |r: &[f32]| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |x| x.0);
                agree += (am(row) == am(brow)) as usize;
            }
        }
        let done = end as f64 / n_pred as f64;
        let bar = (done * 40.0) as usize;
        eprint!(
            "\r[{}{}] {end}/{n_pred} tokens, {:.0} tokens/s",
            "#".repeat(bar),
            " ".repeat(40 - bar),
            end as f64 / t0.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let ppl = (nll / n_pred as f64).exp();
    println!("tokens: {n_pred}");
    println!("mean_nll: {:.6}", nll / n_pred as f64);
    println!("perplexity: {ppl:.4}");
    println!("bits_per_byte: {:.6}", nll / std::f64::consts::LN_2 / text.len() as f64);
    if base.is_some() {
        println!("mean_kl: {:.6e}", kl / n_pred as f64);
        println!("top1_agree: {:.6}", agree as f64 / n_pred as f64);
    }
    Ok(())
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
    let sub = Args { pos: args.pos.get(1..).unwrap_or_default().to_vec(), opts: args.opts };
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
