//! `sutra`: the command-line tool of libsutra.
//!
//! ```text
//! sutra info MODEL
//! sutra logits MODEL --tokens 1,2,3 [--prefill] [--threads N] --out FILE.safetensors
//! sutra synth --arch rwkv7 --layers L --width D --vocab V [--head-size N] [--dtype f32|bf16|f16] [--seed S] --out FILE
//! sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--no-mmap]
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use sutra::format::synth::{synthesize, SynthSpec};
use sutra::tensor::DType;
use sutra::{Error, Model, ModelParams, Result, Session};

const USAGE: &str = "usage:
  sutra info MODEL
  sutra logits MODEL --tokens 1,2,3 [--prefill] [--threads N] --out FILE.safetensors
  sutra synth --arch rwkv4|rwkv5|rwkv6|rwkv7|mamba1|mamba2 --layers L --width D --vocab V [--head-size 64] [--dtype f32|bf16|f16] [--seed S] --out FILE
  sutra bench MODEL [--threads N] [--prompt 512] [--gen 128] [--no-mmap]";

/// Parsed command line: positional arguments and `--flag [value]` options.
struct Args {
    pos: Vec<String>,
    opts: HashMap<String, String>,
}

/// Options that take no value.
const SWITCHES: &[&str] = &["prefill", "no-mmap"];

impl Args {
    fn parse(raw: impl Iterator<Item = String>) -> Result<Args> {
        let mut pos = Vec::new();
        let mut opts = HashMap::new();
        let mut it = raw.peekable();
        while let Some(a) = it.next() {
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
}

fn load(args: &Args) -> Result<Arc<Model>> {
    let params = ModelParams { n_threads: args.num("threads", 0)?, use_mmap: !args.flag("no-mmap") };
    Ok(Arc::new(Model::load(&args.model_path()?, &params)?))
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
