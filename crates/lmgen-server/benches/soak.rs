//! Soak: the server under a mixed, hostile load for a long time (a benchmark-style binary, not
//! a test). It starts `lmgen-server` as a child process on a free port, runs `--clients` loops of
//! random requests (plain and streamed chat and completions, Anthropic messages streamed,
//! clients that hang up mid-stream, oversized and malformed bodies, bursts past the queue for
//! 429s) for `--minutes`, and prints one line a minute: the server's RSS, open file descriptors,
//! KV blocks in use, requests and their p50/p99 latency, status counts. At the end it lets the
//! server drain, checks that no KV block is left in use, stops it with SIGTERM, and prints the
//! RSS and descriptor slopes after warm-up.
//!
//! ```sh
//! cargo bench -p lmgen-server --bench soak -- --minutes 60 --clients 16
//! ```
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Per-minute tallies the client loops add to.
#[derive(Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    statuses: BTreeMap<String, usize>,
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// One HTTP/1.1 exchange; `hang_up_after` bytes of the answer and the connection is dropped.
/// Returns the status code (0 when the connection failed or was dropped on purpose).
async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    hang_up_after: Option<usize>,
) -> (u16, Vec<u8>) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (0, Vec::new());
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return (0, Vec::new());
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if hang_up_after.is_some_and(|limit| answer.len() >= limit) {
            return (0, answer);
        }
    }
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// A random request: (label, path, body, hang up after).
fn request(rng: &mut StdRng) -> (&'static str, &'static str, Vec<u8>, Option<usize>) {
    let words = ["Once", "upon", "a", "time", "the", "model", "said", "hello"];
    let prompt: Vec<&str> = (0..rng.random_range(1..40))
        .map(|_| words[rng.random_range(0..words.len())])
        .collect();
    let prompt = prompt.join(" ");
    let max_tokens = rng.random_range(1..64);
    let chat = |stream: bool| {
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "stream": stream, "temperature": 0.8, "seed": 1})
        .to_string()
        .into_bytes()
    };
    match rng.random_range(0..100) {
        0..=29 => ("chat", "/v1/chat/completions", chat(false), None),
        30..=54 => ("chat-stream", "/v1/chat/completions", chat(true), None),
        55..=64 => (
            "hang-up",
            "/v1/chat/completions",
            chat(true),
            Some(rng.random_range(200..1500)),
        ),
        65..=74 => (
            "completions-n2",
            "/v1/completions",
            serde_json::json!({"model": "m", "prompt": prompt, "max_tokens": max_tokens, "n": 2,
                "logprobs": 2})
            .to_string()
            .into_bytes(),
            None,
        ),
        75..=84 => (
            "messages-stream",
            "/v1/messages",
            serde_json::json!({"model": "m", "max_tokens": max_tokens, "stream": true,
                "messages": [{"role": "user", "content": prompt}]})
            .to_string()
            .into_bytes(),
            None,
        ),
        85..=89 => (
            "oversized",
            "/v1/chat/completions",
            vec![b' '; 2 << 20],
            None,
        ),
        _ => {
            let mut body = chat(false);
            let cut = rng.random_range(0..body.len());
            body.truncate(cut);
            ("malformed", "/v1/chat/completions", body, None)
        }
    }
}

/// `/proc/{pid}` figures of the server: RSS in MiB and open descriptors.
fn proc_stats(pid: u32) -> (f64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss_kb / 1024.0, fds)
}

/// A gauge of `/metrics`.
async fn gauge(addr: &str, name: &str) -> Option<f64> {
    let (_, answer) = exchange(addr, "GET", "/metrics", b"", None).await;
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Least-squares slope of `ys` against their index (per minute).
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let num: f64 = ys
        .iter()
        .enumerate()
        .map(|(i, y)| (i as f64 - mx) * (y - my))
        .sum();
    let den: f64 = (0..ys.len()).map(|i| (i as f64 - mx).powi(2)).sum();
    num / den
}

fn main() {
    let minutes: u64 = arg("--minutes", "60").parse().unwrap();
    let clients: usize = arg("--clients", "16").parse().unwrap();
    let warmup: usize = arg("--warmup-minutes", "5").parse().unwrap();
    let model = arg(
        "--model",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../lmgen/tests/fixtures/golden/models/llama")
            .to_str()
            .unwrap(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmgen-server"))
        .args(["--model", &model, "--served-model-name", "m", "--port", "0"])
        .args(["--kv-cache-tokens", "2048", "--max-queue", "8"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    println!(
        "soak: lmgen-server pid {pid} on {addr}, {clients} clients, {minutes} min, model {model}"
    );
    println!("minute\trss_mib\tfds\tkv_blocks_used\trequests\tp50_ms\tp99_ms\tstatuses");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rss = Vec::new();
    let mut fds = Vec::new();
    let mut five_hundreds = 0;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (addr, tally, stop) = (addr.clone(), tally.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(c as u64);
                while !stop.load(Ordering::Relaxed) {
                    let (label, path, body, hang_up) = request(&mut rng);
                    let start = Instant::now();
                    let (status, _) = exchange(&addr, "POST", path, &body, hang_up).await;
                    let ms = start.elapsed().as_secs_f64() * 1e3;
                    let mut t = tally.lock().unwrap();
                    t.latencies_ms.push(ms);
                    *t.statuses.entry(format!("{label}:{status}")).or_default() += 1;
                }
            }));
        }
        let started = Instant::now();
        for minute in 1..=minutes {
            let next = started + Duration::from_secs(60 * minute);
            tokio::time::sleep_until(next.into()).await;
            let (r, f) = proc_stats(pid);
            let kv = gauge(&addr, "lmgen_kv_blocks_used")
                .await
                .unwrap_or(f64::NAN);
            let t = std::mem::take(&mut *tally.lock().unwrap());
            let mut lat = t.latencies_ms;
            lat.sort_by(f64::total_cmp);
            five_hundreds += t
                .statuses
                .iter()
                .filter(|(k, _)| k.ends_with(":500") || k.ends_with(":502"))
                .map(|(_, n)| n)
                .sum::<usize>();
            let statuses: Vec<String> =
                t.statuses.iter().map(|(k, n)| format!("{k}={n}")).collect();
            println!(
                "{minute}\t{r:.1}\t{f}\t{kv}\t{}\t{:.0}\t{:.0}\t{}",
                lat.len(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                statuses.join(" ")
            );
            rss.push(r);
            fds.push(f as f64);
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        // Drained: every request has finished or been cancelled.
        let mut kv = f64::NAN;
        for _ in 0..100 {
            kv = gauge(&addr, "lmgen_kv_blocks_used")
                .await
                .unwrap_or(f64::NAN);
            if kv == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("after drain: kv_blocks_used {kv}");
    });
    let after = warmup.min(rss.len().saturating_sub(2));
    println!(
        "after {after} warm-up minutes: RSS slope {:+.3} MiB/min (from {:.1} to {:.1} MiB), fd slope {:+.3}/min, \
         5xx other than 503: {five_hundreds}",
        slope(&rss[after..]),
        rss.get(after).copied().unwrap_or(0.0),
        rss.last().copied().unwrap_or(0.0),
        slope(&fds[after..]),
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    println!("server exit after SIGTERM: {status}");
}
