//! `lmgen serve` starts the OpenAI server (crate `lmgen-server`, tested in depth there): it
//! listens, answers a greedy completion equal to `lmgen generate`'s, and exits 0 on SIGTERM.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LLAMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models/llama"
);

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

#[test]
fn serve_answers_as_generate_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen"))
        .args(["serve", "--model", LLAMA, "--port", "0"])
        .args(["--kv-cache-tokens", "2048"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("lmgen-server listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let (status, _) = http(&addr, "GET", "/health", "");
    assert!(status.contains("200"), "{status}");
    let request = serde_json::json!({
        "model": LLAMA, "prompt": "Hello world", "max_tokens": 12, "temperature": 0,
    });
    let (status, body) = http(&addr, "POST", "/v1/completions", &request.to_string());
    assert!(status.contains("200"), "{status}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
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
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "lmgen serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("panicked"), "{log}");
}
