//! Downloads: `lmgen generate --model test-org/tiny` against a fake Hub on 127.0.0.1 that serves
//! the golden checkpoints the way huggingface.co does for the requests hf-hub sends (the file
//! list `/api/models/{id}/revision/{revision}`; `/{id}/resolve/{revision}/{file}` with
//! `X-Repo-Commit`, `ETag`, ranges, and a redirect to a CDN for weights, with `X-Linked-Etag`).
//! The model is fetched into `$HF_HOME/hub` in huggingface_hub's layout, generates what the
//! local directory does, and loads again from the cache with the Hub gone. Errors (unknown,
//! gated and private repositories, a cut connection, no server) say what to do. Nothing here
//! touches the internet.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

const MODELS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../lmgen/tests/fixtures/golden/models"
);
/// The commit `main` of `test-org/tiny` points to: the golden llama, in one safetensors file.
const MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
/// The commit of tag `v1`: the golden qwen2, its weights in two shards.
const V1: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// The token `test-org/private` needs.
const TOKEN: &str = "hf_secret";

fn model_dir(name: &str) -> PathBuf {
    Path::new(MODELS).join(name)
}

/// One commit of a repository: file name -> bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// A repository on the fake Hub.
struct FakeRepo {
    /// revision (branch, tag or the commit itself) -> (commit, files).
    revisions: HashMap<String, (String, Arc<Files>)>,
    /// Files answer 403 (a gated model whose licence was not accepted).
    gated: bool,
    /// The file list and files need `Authorization: Bearer {TOKEN}`, else 401.
    private: bool,
}

/// What the fake Hub serves and has seen.
#[derive(Default)]
struct State {
    repos: HashMap<String, FakeRepo>,
    /// Every request: `"{path} {range header}"`.
    requests: Mutex<Vec<String>>,
    /// Authorization headers seen.
    authorizations: Mutex<Vec<String>>,
    /// Cut the next CDN response after this many body bytes (a dropped connection).
    cut_after: Mutex<Option<usize>>,
    stop: AtomicBool,
}

/// A Hub on 127.0.0.1, answering one connection at a time until stopped.
struct FakeHub {
    addr: SocketAddr,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// `test-org/tiny` (main: llama; v1: qwen2 sharded), `test-org/gated`, `test-org/private`.
    fn start() -> Result<Self> {
        let llama = Arc::new(read_dir_files(&model_dir("llama"))?);
        let qwen2 = Arc::new(sharded(read_dir_files(&model_dir("qwen2"))?)?);
        let tiny = |gated, private| FakeRepo {
            revisions: HashMap::from([
                ("main".to_string(), (MAIN.to_string(), Arc::clone(&llama))),
                (MAIN.to_string(), (MAIN.to_string(), Arc::clone(&llama))),
                ("v1".to_string(), (V1.to_string(), Arc::clone(&qwen2))),
                (V1.to_string(), (V1.to_string(), Arc::clone(&qwen2))),
            ]),
            gated,
            private,
        };
        let state = Arc::new(State {
            repos: HashMap::from([
                ("test-org/tiny".to_string(), tiny(false, false)),
                ("test-org/gated".to_string(), tiny(true, false)),
                ("test-org/private".to_string(), tiny(false, true)),
            ]),
            ..State::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let served = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if served.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    // A client that hangs up early is the client's business.
                    let _ = answer(&served, addr, stream);
                }
            }
        });
        Ok(Self {
            addr,
            state,
            thread: Some(thread),
        })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Stops answering and closes the port.
    fn stop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The files of a checkpoint directory.
fn read_dir_files(dir: &Path) -> Result<Files> {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        files.insert(name, std::fs::read(&path)?);
    }
    Ok(files)
}

/// `files` with `model.safetensors` split into two shards and an index, as `save_pretrained`
/// writes a large checkpoint.
fn sharded(mut files: Files) -> Result<Files> {
    let single = files.remove("model.safetensors").context("weights")?;
    let n = u64::from_le_bytes(single[..8].try_into()?) as usize;
    let header: Map<String, Value> = serde_json::from_slice(&single[8..8 + n])?;
    let data = &single[8 + n..];
    let names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    let shard_names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut weight_map = Map::new();
    for (i, shard) in shard_names.iter().enumerate() {
        let mut shard_header = Map::new();
        let mut bytes = Vec::new();
        for name in names.iter().skip(i).step_by(2) {
            let info = &header[name.as_str()];
            let offsets = &info["data_offsets"];
            let (start, end) = (
                offsets[0].as_u64().context("start")? as usize,
                offsets[1].as_u64().context("end")? as usize,
            );
            let at = bytes.len();
            bytes.extend_from_slice(&data[start..end]);
            let mut info = info.clone();
            info["data_offsets"] = json!([at, bytes.len()]);
            shard_header.insert(name.to_string(), info);
            weight_map.insert(name.to_string(), json!(shard));
        }
        let mut head = serde_json::to_vec(&shard_header)?;
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let mut file = (head.len() as u64).to_le_bytes().to_vec();
        file.extend(head);
        file.extend(bytes);
        files.insert(shard.to_string(), file);
    }
    let index = json!({"metadata": {"total_size": data.len()}, "weight_map": weight_map});
    files.insert(
        "model.safetensors.index.json".into(),
        serde_json::to_vec(&index)?,
    );
    Ok(files)
}

/// An ETag for `bytes` (huggingface.co sends the git or LFS hash; any stable name does here).
fn etag(bytes: &[u8]) -> String {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}{:08x}", h.finish(), bytes.len())
}

/// Reads one request and answers it, as huggingface.co would.
fn answer(state: &State, addr: SocketAddr, stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((key, value)) = header.split_once(':') {
            headers.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let auth = headers.get("authorization").cloned();
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("{path} {}", range.as_deref().unwrap_or("-")));
    if let Some(auth) = &auth {
        state.authorizations.lock().unwrap().push(auth.clone());
    }
    let authorized = auth.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let mut out = stream;
    let path = path.replace("%2F", "/");

    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, revision)) = rest.split_once("/revision/") else {
            return respond(&mut out, 404, &[], b"{}");
        };
        return match lookup(state, id, revision) {
            Some((repo, _, _)) if repo.private && !authorized => {
                respond(&mut out, 401, &[("X-Error-Code", "RepoNotFound")], b"{}")
            }
            Some((_, commit, files)) => {
                let siblings: Vec<Value> = files.keys().map(|f| json!({"rfilename": f})).collect();
                let body = json!({"id": id, "sha": commit, "siblings": siblings});
                respond(&mut out, 200, &[], &serde_json::to_vec(&body)?)
            }
            None => respond(&mut out, 404, &[("X-Error-Code", "RepoNotFound")], b"{}"),
        };
    }
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let (commit, file) = rest.split_once('/').context("cdn path")?;
        let files = lookup(state, "test-org/tiny", commit).context("commit")?.2;
        let bytes = files.get(file).context("cdn file")?;
        return serve(
            &mut out,
            bytes,
            range.as_deref(),
            &[],
            Some(&state.cut_after),
        );
    }
    // /{org}/{name}/resolve/{revision}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", revision, file] = parts[..] else {
        return respond(&mut out, 404, &[], b"");
    };
    let Some((repo, commit, files)) = lookup(state, &format!("{org}/{name}"), revision) else {
        return respond(&mut out, 404, &[("X-Error-Code", "RepoNotFound")], b"");
    };
    if repo.private && !authorized {
        return respond(&mut out, 401, &[("X-Error-Code", "RepoNotFound")], b"");
    }
    if repo.gated {
        return respond(&mut out, 403, &[("X-Error-Code", "GatedRepo")], b"");
    }
    let Some(bytes) = files.get(file) else {
        let headers = [
            ("X-Error-Code", "EntryNotFound"),
            ("X-Repo-Commit", &commit),
        ];
        return respond(&mut out, 404, &headers, b"");
    };
    let tag = format!("\"{}\"", etag(bytes));
    if file.ends_with(".safetensors") {
        // An LFS file: the Hub redirects to its CDN, naming the blob in X-Linked-Etag.
        let location = format!("http://{addr}/cdn/{commit}/{file}");
        let size = bytes.len().to_string();
        let headers = [
            ("Location", location.as_str()),
            ("X-Repo-Commit", &commit),
            ("X-Linked-Etag", &tag),
            ("X-Linked-Size", &size),
            ("ETag", "\"pointer\""),
        ];
        return respond(&mut out, 302, &headers, b"");
    }
    let headers = [("X-Repo-Commit", commit.as_str()), ("ETag", &tag)];
    serve(&mut out, bytes, range.as_deref(), &headers, None)
}

/// The repository `id` at `revision`: (repository, commit, files).
fn lookup<'a>(
    state: &'a State,
    id: &str,
    revision: &str,
) -> Option<(&'a FakeRepo, String, Arc<Files>)> {
    let repo = state.repos.get(id)?;
    let (commit, files) = repo.revisions.get(revision)?;
    Some((repo, commit.clone(), Arc::clone(files)))
}

/// Serves `bytes`, or the part a `Range: bytes=a-[b]` header asks for (206). A `cut` that is
/// armed with fewer bytes than the body sends that many and closes the connection (once).
fn serve(
    out: &mut TcpStream,
    bytes: &[u8],
    range: Option<&str>,
    headers: &[(&str, &str)],
    cut: Option<&Mutex<Option<usize>>>,
) -> Result<()> {
    let total = bytes.len();
    let cut_short = |body: &[u8]| cut.and_then(|c| c.lock().unwrap().take_if(|n| *n < body.len()));
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return send(out, 200, headers, bytes, cut_short(bytes));
    };
    let (start, end) = spec.split_once('-').context("range")?;
    let start: usize = start.parse()?;
    let end = match end {
        "" => total - 1,
        end => end.parse::<usize>()?.min(total - 1),
    };
    let content_range = format!("bytes {start}-{end}/{total}");
    let mut all = headers.to_vec();
    all.push(("Content-Range", &content_range));
    let body = &bytes[start..=end];
    send(out, 206, &all, body, cut_short(body))
}

fn respond(out: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<()> {
    send(out, status, headers, body, None)
}

/// Writes a response with `Content-Length` and `Connection: close`.
fn send(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    cut: Option<usize>,
) -> Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&body[..cut.unwrap_or(body.len()).min(body.len())])?;
    out.flush()?;
    Ok(())
}

/// Runs `lmgen args...` with `HF_HOME=home` and `env`, in an environment without any other
/// Hugging Face setting or proxy.
fn lmgen(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmgen"));
    for key in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "HF_ENDPOINT",
        "XDG_CACHE_HOME",
        "LMGEN_LOG",
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ] {
        cmd.env_remove(key);
    }
    Ok(cmd
        .args(args)
        .env("HF_HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()?)
}

/// `lmgen generate --model MODEL` greedy for 5 tokens, plus `extra` flags.
fn generate(model: &str, extra: &[&str], home: &Path, env: &[(&str, &str)]) -> Result<Output> {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--do-sample",
        "false",
    ];
    args.extend_from_slice(extra);
    lmgen(&args, home, env)
}

/// Stdout of a run that must succeed.
#[track_caller]
fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failed run whose stderr names every one of `parts` and shows no panic.
#[track_caller]
fn assert_fails_naming(out: &Output, parts: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for part in parts {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

/// What `generate` prints for the golden model `name` loaded from its directory.
fn local_output(name: &str) -> String {
    static OUTPUTS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let outputs = OUTPUTS.get_or_init(Mutex::default);
    if let Some(text) = outputs.lock().unwrap().get(name) {
        return text.clone();
    }
    let home = tempfile::tempdir().unwrap();
    let dir = model_dir(name);
    let out = generate(dir.to_str().unwrap(), &[], home.path(), &[]).unwrap();
    let text = stdout(&out);
    assert!(
        text.starts_with("Hello") && text.len() > "Hello\n".len(),
        "{text:?}"
    );
    outputs.lock().unwrap().insert(name.into(), text.clone());
    text
}

/// `models--test-org--{name}` in the cache under `home`.
fn cached_repo(home: &Path, name: &str) -> PathBuf {
    home.join("hub").join(format!("models--test-org--{name}"))
}

/// The file names under `dir`, recursively, relative to it.
fn listing(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                names.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn a_model_id_is_downloaded_into_the_cache_and_then_loads_offline() -> Result<()> {
    let mut hub = FakeHub::start()?;
    let home = tempfile::tempdir()?;
    let endpoint = hub.endpoint();
    let online = [("HF_ENDPOINT", endpoint.as_str())];
    let out = generate("test-org/tiny", &[], home.path(), &online)?;
    assert_eq!(stdout(&out), local_output("llama"));

    // huggingface_hub's layout: refs/main -> commit, snapshot links into blobs, no partial files.
    let repo = cached_repo(home.path(), "tiny");
    assert_eq!(std::fs::read_to_string(repo.join("refs/main"))?, MAIN);
    assert_eq!(listing(&repo.join("refs")), ["main"]);
    let snapshot = repo.join("snapshots").join(MAIN);
    let local = model_dir("llama");
    let expected = listing(&local);
    assert_eq!(listing(&snapshot), expected);
    for name in &expected {
        let link = std::fs::read_link(snapshot.join(name))?;
        assert!(
            link.starts_with("../../blobs"),
            "{name}: {}",
            link.display()
        );
        assert_eq!(
            std::fs::read(snapshot.join(name))?,
            std::fs::read(local.join(name))?
        );
    }
    let blobs = listing(&repo.join("blobs"));
    assert!(!blobs.iter().any(|b| b.ends_with(".part")), "{blobs:?}");
    assert!(
        !repo.join(".no_exist").exists(),
        "llama has every optional file"
    );

    // Only what the loader reads was asked for: the file list, then each file once (hf-hub's
    // metadata request, bytes=0-0, then the download).
    let requests = hub.requests();
    assert_eq!(requests[0], "/api/models/test-org/tiny/revision/main -");
    let resolved: Vec<&str> = requests
        .iter()
        .filter_map(|r| r.strip_prefix(&format!("/test-org/tiny/resolve/{MAIN}/")))
        .filter_map(|r| r.strip_suffix(" bytes=0-0"))
        .collect();
    let mut resolved = resolved;
    resolved.sort();
    assert_eq!(resolved, expected, "{requests:#?}");

    // With the Hub gone, the cache answers: offline, and online too (the snapshot is complete).
    hub.stop();
    let offline = generate(
        "test-org/tiny",
        &[],
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
    )?;
    assert_eq!(stdout(&offline), local_output("llama"));
    let again = generate("test-org/tiny", &[], home.path(), &online)?;
    assert_eq!(stdout(&again), local_output("llama"));
    Ok(())
}

#[test]
fn tokenize_fetches_the_tokenizer_files_only() -> Result<()> {
    let hub = FakeHub::start()?;
    let home = tempfile::tempdir()?;
    let online = [("HF_ENDPOINT", hub.endpoint())];
    let online: Vec<(&str, &str)> = online.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tokenize = |model: &str| -> Result<String> {
        let requests = home.path().join("requests.jsonl");
        let line = json!({"model": model, "text": "Hello world"});
        std::fs::write(&requests, format!("{line}\n"))?;
        let file = requests.to_str().context("utf-8")?;
        Ok(stdout(&lmgen(
            &["tokenize", "--request", file],
            home.path(),
            &online,
        )?))
    };
    let local = tokenize(model_dir("llama").to_str().context("utf-8")?)?;
    assert!(local.contains("\"ids\""), "{local}");
    assert_eq!(tokenize("test-org/tiny")?, local);
    let requests = hub.requests();
    assert!(
        !requests.iter().any(|r| r.contains("safetensors")),
        "{requests:#?}"
    );
    let snapshot = cached_repo(home.path(), "tiny")
        .join("snapshots")
        .join(MAIN);
    let expected = [
        "chat_template.jinja",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    assert_eq!(listing(&snapshot), expected);
    Ok(())
}

#[test]
fn revision_selects_the_ref_and_every_shard_is_fetched() -> Result<()> {
    let mut hub = FakeHub::start()?;
    let home = tempfile::tempdir()?;
    let endpoint = hub.endpoint();
    let online = [("HF_ENDPOINT", endpoint.as_str())];
    let out = generate("test-org/tiny", &["--revision", "v1"], home.path(), &online)?;
    assert_eq!(stdout(&out), local_output("qwen2"));

    let repo = cached_repo(home.path(), "tiny");
    assert_eq!(std::fs::read_to_string(repo.join("refs/v1"))?, V1);
    assert_eq!(listing(&repo.join("refs")), ["v1"]);
    let snapshot = repo.join("snapshots").join(V1);
    for name in [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(snapshot.join(name).is_file(), "{name}");
    }
    assert!(!snapshot.join("model.safetensors").exists());
    // qwen2 has no chat template: recorded as absent, so the next run needs no network.
    assert!(repo
        .join(".no_exist")
        .join(V1)
        .join("chat_template.jinja")
        .is_file());

    hub.stop();
    // `org/name@revision` names the same snapshot; it and `--revision` must agree.
    let offline = generate("test-org/tiny@v1", &[], home.path(), &online)?;
    assert_eq!(stdout(&offline), local_output("qwen2"));
    let both = generate(
        "test-org/tiny@v1",
        &["--revision", "main"],
        home.path(),
        &online,
    )?;
    assert_fails_naming(&both, &["`test-org/tiny@v1` names revision `v1`", "`main`"]);
    Ok(())
}

#[test]
fn unknown_gated_and_private_repositories_say_what_to_do() -> Result<()> {
    let hub = FakeHub::start()?;
    let home = tempfile::tempdir()?;
    let endpoint = hub.endpoint();
    let online = [("HF_ENDPOINT", endpoint.as_str())];

    let out = generate("test-org/nope", &[], home.path(), &online)?;
    assert_fails_naming(
        &out,
        &[
            "model `test-org/nope` (revision `main`)",
            "404",
            "check the model id",
            "HF_TOKEN",
        ],
    );
    let out = generate("test-org/tiny", &["--revision", "v9"], home.path(), &online)?;
    assert_fails_naming(&out, &["(revision `v9`)", "404"]);

    let out = generate("test-org/gated", &[], home.path(), &online)?;
    let page = format!("licence on {endpoint}/test-org/gated");
    assert_fails_naming(
        &out,
        &[
            "`config.json` of model `test-org/gated`",
            "403",
            &page,
            "HF_TOKEN",
        ],
    );

    let out = generate("test-org/private", &[], home.path(), &online)?;
    assert_fails_naming(&out, &["test-org/private", "401", "HF_TOKEN"]);
    // The token, from the token file `hf auth login` writes, or from HF_TOKEN.
    std::fs::write(home.path().join("token"), format!("{TOKEN}\n"))?;
    let out = generate("test-org/private", &[], home.path(), &online)?;
    assert_eq!(stdout(&out), local_output("llama"));
    let other_home = tempfile::tempdir()?;
    let with_token = [("HF_ENDPOINT", endpoint.as_str()), ("HF_TOKEN", TOKEN)];
    let out = generate("test-org/private", &[], other_home.path(), &with_token)?;
    assert_eq!(stdout(&out), local_output("llama"));
    let authorizations = hub.state.authorizations.lock().unwrap().clone();
    assert!(authorizations
        .iter()
        .all(|a| a == &format!("Bearer {TOKEN}")));
    Ok(())
}

#[test]
fn a_cut_connection_is_an_error_and_the_next_run_resumes() -> Result<()> {
    let hub = FakeHub::start()?;
    let home = tempfile::tempdir()?;
    let endpoint = hub.endpoint();
    let online = [("HF_ENDPOINT", endpoint.as_str())];
    *hub.state.cut_after.lock().unwrap() = Some(100_000);
    let out = generate("test-org/tiny", &[], home.path(), &online)?;
    assert_fails_naming(
        &out,
        &[
            "`model.safetensors` of model `test-org/tiny`",
            &endpoint,
            "HF_HUB_OFFLINE=1",
        ],
    );
    let blobs = listing(&cached_repo(home.path(), "tiny").join("blobs"));
    assert!(blobs.iter().any(|b| b.ends_with(".part")), "{blobs:?}");

    let out = generate("test-org/tiny", &[], home.path(), &online)?;
    assert_eq!(stdout(&out), local_output("llama"));
    // The second run asked only for the rest of the file.
    let resumed = hub.requests().into_iter().any(|r| {
        r.starts_with("/cdn/")
            && r.contains("bytes=")
            && !r.ends_with("bytes=0-0")
            && !r.ends_with("bytes=0-")
    });
    assert!(resumed, "{:#?}", hub.requests());
    Ok(())
}

#[test]
fn an_unreachable_hub_names_the_endpoint() -> Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let home = tempfile::tempdir()?;
    let out = generate(
        "test-org/tiny",
        &[],
        home.path(),
        &[("HF_ENDPOINT", &endpoint)],
    )?;
    assert_fails_naming(
        &out,
        &[
            "the file list of model `test-org/tiny`",
            &format!("cannot reach {endpoint}"),
            "HF_HUB_OFFLINE=1",
        ],
    );
    let out = generate(
        "test-org/tiny",
        &[],
        home.path(),
        &[("HF_HUB_OFFLINE", "1")],
    )?;
    assert_fails_naming(
        &out,
        &["model `test-org/tiny` not found", "offline mode is on"],
    );
    Ok(())
}
