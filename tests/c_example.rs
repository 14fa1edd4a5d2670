//! Builds the C examples with `-std=c11 -Wall -Wextra -Werror` against include/sutra.h,
//! links them to the libsutra.so built by cargo, and runs them (under valgrind when
//! `VALGRIND=1`).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// target/<profile>/ (holds libsutra.so), found from this test executable (target/<profile>/deps/).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for d in [deps.parent().unwrap(), deps] {
        if d.join("libsutra.so").exists() || d.join("libsutra.dylib").exists() {
            return d.to_path_buf();
        }
    }
    panic!("libsutra shared library not found near {}", deps.display());
}

/// Compiles examples-c/`name`.c with the C compiler the `cc` crate picks for this target.
pub fn build_example(name: &str, tag: &str) -> PathBuf {
    let lib = lib_dir();
    let out = std::env::temp_dir().join(format!("sutra-{name}-{tag}-{}", std::process::id()));
    let compiler = cc::Build::new()
        .target(env!("SUTRA_TARGET"))
        .host(env!("SUTRA_HOST"))
        .opt_level(1)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .arg("-I")
        .arg(repo("include"))
        .arg(repo(&format!("examples-c/{name}.c")))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lsutra")
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling examples-c/{name}.c failed");
    out
}

/// Runs `exe args`, under valgrind (no errors, no definite/indirect leaks) when VALGRIND=1.
pub fn run(exe: &PathBuf, args: &[String]) -> String {
    run_with_input(exe, args, "")
}

/// [`run`] with `input` on standard input.
pub fn run_with_input(exe: &PathBuf, args: &[String], input: &str) -> String {
    use std::io::Write;
    let valgrind = std::env::var("VALGRIND").is_ok_and(|v| v == "1");
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "-q"])
            .arg(exe);
        c
    } else {
        command(exe)
    };
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the example");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed ({:?}):\n{}\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn next_tokens_prints_the_top_five_of_the_rust_api() {
    let exe = build_example("next_tokens", "top5");
    let model = repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors");
    let tokens = [0u32, 51, 1103, 22];
    let mut args = vec![model.display().to_string()];
    args.extend(tokens.iter().map(|t| t.to_string()));
    let stdout = run(&exe, &args);

    let m = load(&model, 2);
    let mut s = sutra::Session::new(&m);
    let mut logits = vec![0f32; m.info().n_vocab];
    s.eval(&tokens, Some(&mut logits)).unwrap();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));

    let lines: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (rank, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], (rank + 1).to_string());
        let id: usize = f[1].parse().unwrap();
        let logit: f32 = f[2].parse().unwrap();
        assert_eq!(id, order[rank], "rank {rank}: {stdout}");
        assert!((logit - logits[id]).abs() < 1e-4, "{logit} vs {}", logits[id]);
    }
}

#[test]
fn next_tokens_reports_errors_with_a_message() {
    let exe = build_example("next_tokens", "errors");
    let out = command(&exe).args(["/nonexistent/model.safetensors", "1"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SUTRA_ERR_IO") && err.contains("/nonexistent/model.safetensors"), "{err}");
}

fn bundled(file: &str) -> String {
    repo(&format!("models/rwkv7-shakespeare-6x256/{file}")).display().to_string()
}

/// The demo: generate.c writes text after the prompt, and the same seed gives the same text
/// as the Rust API with the same sampler chain.
#[test]
fn generate_c_writes_the_same_text_as_the_rust_api() {
    let exe = build_example("generate", "gen");
    let args: Vec<String> =
        vec![bundled("model-bf16.safetensors"), bundled("tokenizer.json"), "ROMEO:\n".into(), "60".into(), "42".into()];
    let stdout = run(&exe, &args);

    let m = load(&repo("models/rwkv7-shakespeare-6x256/model-bf16.safetensors"), 2);
    let t = sutra::Tokenizer::from_file(&repo("models/rwkv7-shakespeare-6x256/tokenizer.json")).unwrap();
    let mut s = sutra::Sampler::new(42);
    s.add(sutra::Stage::TopP { p: 0.9, min_keep: 1 }).unwrap();
    s.add(sutra::Stage::Temperature(0.8)).unwrap();
    s.add(sutra::Stage::Dist).unwrap();
    let mut text = String::from("ROMEO:\n");
    let p = sutra::GenerateParams { max_tokens: 60, stop_tokens: vec![0], ..Default::default() };
    let mut sess = sutra::Session::new(&m);
    sutra::generate(&mut sess, &t, &mut s, "ROMEO:\n", &p, &mut |piece| {
        text.push_str(piece);
        true
    })
    .unwrap();
    assert_eq!(stdout, format!("{text}\n"));
    // The README shows what `make -C examples-c run` prints (the same prompt and seed): its
    // sample block, up to the `...` line, starts the demo's text.
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let block = readme.split("```\nROMEO:\n").nth(1).expect("the README's sample output block");
    let sample = format!("ROMEO:\n{}", block.split("...\n").next().unwrap());
    assert!(stdout.starts_with(&sample), "README sample:\n{sample}\ndemo:\n{stdout}");
}

/// chat.c keeps one session across turns and answers each line.
#[test]
fn chat_c_answers_each_turn() {
    let exe = build_example("chat", "chat");
    let stdout = run_with_input(
        &exe,
        &[bundled("model-bf16.safetensors"), bundled("tokenizer.json")],
        "Who art thou?\nWhere is the king?\n",
    );
    assert_eq!(stdout.matches("Assistant:").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("User: ").count(), 3, "{stdout}");
}

/// finetune.c trains an adapter through the C API: the loss falls, the PEFT folder is
/// written and loads, and the adapter changes what the model writes.
#[test]
fn finetune_c_trains_saves_and_generates() {
    let exe = build_example("finetune", "ft");
    let out_dir = std::env::temp_dir().join(format!("sutra-finetune-c-{}", std::process::id()));
    let args: Vec<String> = vec![
        repo("models/rwkv7-shakespeare-6x256/model.safetensors").display().to_string(),
        repo("models/rwkv7-shakespeare-6x256/tokenizer.json").display().to_string(),
        fixture("shakespeare/valid.txt").display().to_string(),
        out_dir.display().to_string(),
        "12".into(),
        "48".into(),
    ];
    let stdout = run(&exe, &args);
    let losses: Vec<f32> =
        stdout.lines().filter_map(|l| l.strip_prefix("step ")?.split(" loss ").nth(1)?.parse().ok()).collect();
    assert_eq!(losses.len(), 12, "{stdout}");
    let (first, last) = (losses[..3].iter().sum::<f32>() / 3.0, losses[9..].iter().sum::<f32>() / 3.0);
    assert!(last < first - 0.05, "the loss did not fall: {losses:?}");
    assert!(out_dir.join("adapter_config.json").exists() && out_dir.join("adapter_model.safetensors").exists());
    let base = stdout.split("--- base ---").nth(1).and_then(|s| s.split("--- adapter ---").next()).unwrap();
    let tuned = stdout.split("--- adapter ---").nth(1).unwrap();
    assert!(base.len() > 20 && tuned.len() > 20, "{stdout}");
    assert_ne!(base, tuned, "the adapter did not change the text");
    std::fs::remove_dir_all(&out_dir).ok();
}

/// bad_input.c throws bad inputs at every exported function (NULLs, broken files, out-of-range
/// values, short buffers, corrupted state blobs, foreign adapters, bad training and sampling
/// parameters): each gets its exact status and a message naming the argument or file, and
/// what the caller owns is unchanged and still works. Known library bugs are listed in the
/// program and reported as "known" without failing.
#[test]
fn bad_input_c_gets_the_contracted_statuses_and_messages() {
    let exe = build_example("bad_input", "bad");
    let f = |p: &str| fixture(p).display().to_string();
    let args = vec![
        f("golden/rwkv7/model.safetensors"),
        f("golden/rwkv4/model.safetensors"),
        f("golden/mamba1/model.safetensors"),
        f("golden/lora/rwkv7"),
        f("golden/lora/mamba1"),
        bundled("tokenizer.json"),
    ];
    let stdout = run(&exe, &args);
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.starts_with("bad_input: ") && summary.contains(" 0 failed"), "{stdout}");
    let ok: usize = summary["bad_input: ".len()..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(ok > 250, "only {ok} cases ran: {stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL") || l.starts_with("FIXED")), "{stdout}");
}
