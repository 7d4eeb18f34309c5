//! `lmgen serve` starts the OpenAI server (crate `lmgen-server`, tested in depth there): it
//! listens, answers a greedy completion equal to `lmgen generate`'s, and exits 0 on SIGTERM. It
//! loads the model as every subcommand does (the shared `ModelArgs`): `--quantize`,
//! `--gguf-file` and `--attn-implementation` reach the model, and a bad `--dtype` is refused by
//! name before anything loads.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lmgen::models::{LoadOptions, Quantization};
use lmgen::{GenerateInput, GenerationConfig, Pipeline};
use serde_json::{json, Value};

const LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models/llama"
);
/// The golden llama written as an f32 GGUF by llama.cpp's gguf-py (`crates/lmgen/tests/gguf.rs`).
const LLAMA_GGUF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/gguf/llama-f32.gguf"
);
/// Tokens of one prompt the golden llama does not end within a few steps (as in `cli.rs`).
const PROMPT: [u32; 3] = [1, 15, 27];
const MAX_TOKENS: usize = 8;

/// One HTTP/1.1 request over a fresh connection; the status line and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// A running `lmgen serve` on a free port, logging at info to a file; killed on drop (a failed
/// test), stopped with SIGTERM by [`Serve::stop`].
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(flags: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen"))
            .args(["serve", "--port", "0", "--kv-cache-tokens", "2048"])
            .args(flags)
            .env("LMGEN_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("lmgen-server listening on http://")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Serve {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// `POST /v1/completions` with `request`; must answer 200.
    fn complete(&self, request: &Value) -> Value {
        let (status, body) = http(&self.addr, "POST", "/v1/completions", &request.to_string());
        assert!(status.contains("200"), "{status}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, then the exit status must be 0 within 30 s; returns the log.
    fn stop(mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "lmgen serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(status.success(), "{status}: {log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Already exited after `stop`; then both fail harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Greedy `PROMPT` + `MAX_TOKENS` with logprobs, so the answer lists each token's text.
fn greedy_request() -> Value {
    json!({
        "model": LLAMA, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0,
        "logprobs": 0,
    })
}

/// What the server must answer to [`greedy_request`] for the golden llama loaded with `options`:
/// static `generate()`'s tokens, each as the server's `logprobs.tokens` writes it, and the text.
fn expected(options: &LoadOptions) -> (Vec<String>, String) {
    let pipe = Pipeline::load(LLAMA, options).unwrap();
    let overrides = GenerationConfig {
        max_new_tokens: Some(MAX_TOKENS),
        do_sample: Some(false),
        ..GenerationConfig::default()
    };
    let out = pipe
        .generate(&GenerateInput::single(PROMPT.to_vec()), &overrides)
        .unwrap();
    let new = out.generated(0);
    assert_eq!(new.len(), MAX_TOKENS, "the prompt ends early: {new:?}");
    let tokens = new
        .iter()
        .map(|&id| pipe.tokenizer.decode(&[id], false).unwrap())
        .collect();
    (tokens, pipe.tokenizer.decode(new, true).unwrap())
}

/// The tokens and the text of a completion answer.
fn answered(answer: &Value) -> (Vec<String>, String) {
    let choice = &answer["choices"][0];
    let tokens = serde_json::from_value(choice["logprobs"]["tokens"].clone())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    (tokens, choice["text"].as_str().unwrap().to_string())
}

#[test]
fn serve_answers_as_generate_and_exits_on_sigterm() {
    let serve = Serve::start(&["--model", LLAMA]);
    let (status, _) = http(&serve.addr, "GET", "/health", "");
    assert!(status.contains("200"), "{status}");
    let request = json!({
        "model": LLAMA, "prompt": "Hello world", "max_tokens": 12, "temperature": 0,
    });
    let answer = serve.complete(&request);
    let generated = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(["generate", "--model", LLAMA, "--prompt", "Hello world"])
        .args(["--do-sample", "false", "--max-new-tokens", "12"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let generated = String::from_utf8(generated.stdout).unwrap();
    let text = answer["choices"][0]["text"].as_str().unwrap();
    assert_eq!(
        generated.trim_end_matches('\n'),
        format!("Hello world{text}"),
        "{answer}"
    );
    serve.stop();
}

/// `--quantize q8_0`: the server's model is the Q8_0 one, token for token as `generate()` with
/// `LoadOptions::quantize`.
#[test]
fn serve_quantizes_at_load() {
    let serve = Serve::start(&["--model", LLAMA, "--quantize", "q8_0"]);
    let answer = serve.complete(&greedy_request());
    let q8_0 = LoadOptions {
        quantize: Some(Quantization::Q8_0),
        ..LoadOptions::default()
    };
    assert_eq!(answered(&answer), expected(&q8_0), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], MAX_TOKENS, "{answer}");
    let log = serve.stop();
    // The startup line names the load options (as `quantize=Some(Q8_0)`, maybe coloured).
    assert!(log.contains("Some(Q8_0)"), "{log}");
}

/// `--gguf-file` (with `--attn-implementation eager`, which changes nothing for Llama): the f32
/// GGUF's greedy tokens are the safetensors model's; the tokenizer still comes from `--model`.
#[test]
fn serve_loads_a_gguf_file_as_the_safetensors_model() {
    let serve = Serve::start(&[
        "--model",
        LLAMA,
        "--gguf-file",
        LLAMA_GGUF,
        "--attn-implementation",
        "eager",
    ]);
    let answer = serve.complete(&greedy_request());
    assert_eq!(
        answered(&answer),
        expected(&LoadOptions::default()),
        "{answer}"
    );
    let log = serve.stop();
    assert!(log.contains("llama-f32.gguf"), "{log}");
    assert!(log.contains("Eager"), "{log}");
}

/// The model flags are clap value enums: a bad value is refused naming the flag, before any load.
#[test]
fn bad_model_flags_are_refused_by_name() {
    for (flag, value) in [
        ("--dtype", "f8"),
        ("--quantize", "q3"),
        ("--attn-implementation", "flash"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
            .args(["serve", "--model", LLAMA, "--port", "0", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{flag}: {stderr}"
        );
    }
}

/// `--tensor-parallel-size 2`: the golden llama split across two processes (rank 0 the server,
/// rank 1 started by it, over TCP) answers greedy requests with `generate()`'s tokens of the
/// whole model, several at once in one engine step, and both ranks exit on SIGTERM.
#[test]
fn serve_splits_the_model_across_two_ranks() {
    let serve = Serve::start(&["--model", LLAMA, "--tensor-parallel-size", "2"]);
    let (want_tokens, want_text) = expected(&LoadOptions::default());
    let answers: Vec<Value> = std::thread::scope(|s| {
        let requests: Vec<_> = (0..3)
            .map(|_| s.spawn(|| serve.complete(&greedy_request())))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(
            answered(answer),
            (want_tokens.clone(), want_text.clone()),
            "{answer}"
        );
    }
    let log = serve.stop();
    assert!(log.contains("following rank 0's engine"), "{log}");
    assert!(!log.contains("a tensor-parallel rank failed"), "{log}");
}

/// A model the split engine cannot run (Whisper: each sequence's encoder output is not mirrored
/// on the other ranks) is refused before serving, by what it lacks; every rank exits.
#[test]
fn serve_refuses_to_split_an_encoder_decoder_model() {
    let whisper = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lmgen/tests/fixtures/golden-seq2seq/models/whisper"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(["serve", "--port", "0", "--model", whisper])
        .args(["--tensor-parallel-size", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("decoder-only models"), "{err}");
}

/// `--tensor-parallel-listen`: rank 0 starts no ranks and waits for one started by hand (as on
/// another host) with `--tensor-parallel-rank 1 --tensor-parallel-addr`; the pair answers as the
/// whole model does, and the hand-started rank exits 0 when rank 0 stops.
#[test]
fn serve_waits_for_ranks_started_by_hand() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut rank1 = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(["serve", "--model", LLAMA, "--kv-cache-tokens", "2048"])
        .args(["--tensor-parallel-size", "2", "--tensor-parallel-rank", "1"])
        .args(["--tensor-parallel-addr", &addr])
        .env("LMGEN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serve = Serve::start(&[
        "--model",
        LLAMA,
        "--tensor-parallel-size",
        "2",
        "--tensor-parallel-listen",
        &addr,
    ]);
    let answer = serve.complete(&greedy_request());
    assert_eq!(
        answered(&answer),
        expected(&LoadOptions::default()),
        "{answer}"
    );
    serve.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = rank1.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rank 1 did not exit after rank 0 stopped"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    rank1
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("following rank 0's engine"), "{err}");
}
