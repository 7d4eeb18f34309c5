//! One download: the repository's file list, then each file lmgen reads that the snapshot lacks
//! (hf-hub fetches it into the cache), the absent optional files recorded in `.no_exist`, and the
//! ref. Errors become [`Error::Download`] messages that say what to do.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use hf_hub::api::sync::{Api, ApiError, ApiRepo};
use hf_hub::api::Progress;
use hf_hub::{Repo, RepoType};
use indicatif::ProgressBar;

use super::{is_repo_path, shard_names, FileSet, BAR_BYTES, EXTRA_TEMPLATES, SPM_FILES};
use crate::error::{Error, Result};
use crate::load::{is_plain_name, CONFIG, INDEX_FILE, SINGLE_FILE};

/// What to download of a repository.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// Files to fetch, in order (small ones first).
    fetch: Vec<String>,
    /// Optional files the repository does not have (recorded in `.no_exist`).
    absent: Vec<&'static str>,
    /// Whether the weights are sharded: fetch the shards the index names after it.
    sharded: bool,
}

/// The [`Plan`] for `files` of a repository that lists `listed`, or why it cannot be loaded.
fn plan(files: FileSet<'_>, listed: &BTreeSet<String>) -> std::result::Result<Plan, String> {
    let has = |name: &str| listed.contains(name);
    let gguf_files: Vec<&str> = listed
        .iter()
        .filter(|f| f.ends_with(".gguf"))
        .map(String::as_str)
        .collect();
    let gguf_hint = match gguf_files.as_slice() {
        [] => String::new(),
        some => format!(
            "; it has GGUF files ({}): pass one as the GGUF file (`--gguf-file`)",
            some.join(", ")
        ),
    };
    let mut fetch = Vec::new();
    match files.required() {
        Some(required) if has(&required) => fetch.push(required),
        Some(required) if required == CONFIG => {
            return Err(format!(
                "the repository has no {CONFIG}: lmgen loads transformers checkpoints{gguf_hint}"
            ))
        }
        Some(required) => {
            let found = if gguf_files.is_empty() {
                "none".to_string()
            } else {
                gguf_files.join(", ")
            };
            return Err(format!(
                "`{required}` is not in the repository; its GGUF files: {found}"
            ));
        }
        None => return Err("the GGUF file must be a path inside the repository".into()),
    }
    let (present, absent): (Vec<&'static str>, Vec<&'static str>) =
        files.optional().into_iter().partition(|f| has(f));
    fetch.extend(present.into_iter().map(String::from));
    fetch.extend(
        listed
            .iter()
            .filter(|f| f.starts_with(EXTRA_TEMPLATES) && f.ends_with(".jinja"))
            .cloned(),
    );
    // A SentencePiece tokenizer with no tokenizer.json (Marian's `MarianTokenizer`): its .spm
    // models and vocabularies ([`crate::tokenizer::Tokenizer::from_dir`] reads them).
    if !has("tokenizer.json") && has(SPM_FILES[0]) {
        fetch.extend(SPM_FILES.iter().filter(|f| has(f)).map(|f| f.to_string()));
    }
    let mut sharded = false;
    if files == FileSet::Checkpoint {
        if has(SINGLE_FILE) {
            fetch.push(SINGLE_FILE.into());
        } else if has(INDEX_FILE) {
            fetch.push(INDEX_FILE.into());
            sharded = true;
        } else {
            return Err(format!(
                "the repository has neither {SINGLE_FILE} nor {INDEX_FILE}: lmgen loads \
                 safetensors weights only (never pytorch_model.bin){gguf_hint}"
            ));
        }
    }
    Ok(Plan {
        fetch,
        absent,
        sharded,
    })
}

/// One repository being downloaded at one revision.
pub(super) struct Download<'a> {
    /// `org/name`.
    pub(super) id: &'a str,
    /// The revision asked for (a branch, tag or commit).
    pub(super) revision: &'a str,
    pub(super) endpoint: &'a str,
    pub(super) api: Api,
    /// `models--{org}--{name}` in the cache.
    pub(super) repo_dir: PathBuf,
    /// Draw progress bars for large files.
    pub(super) progress: bool,
    /// Whether a token is sent (401 and 403 answers say so).
    pub(super) token: bool,
}

impl Download<'_> {
    /// Lists the repository, fetches the files of `files` that the snapshot lacks, records the
    /// absent optional ones and the ref; returns the snapshot directory.
    pub(super) fn run(&self, files: FileSet<'_>) -> Result<PathBuf> {
        let repo = Repo::with_revision(self.id.into(), RepoType::Model, self.revision.into());
        let info = self
            .api
            .repo(repo)
            .info()
            .map_err(|e| self.api_error(None, e))?;
        let commit = info.sha;
        if !is_plain_name(&commit) {
            let message = format!("{} answered commit `{commit}`", self.endpoint);
            return Err(self.error(None, message));
        }
        let listed: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let plan = plan(files, &listed).map_err(|message| self.error(None, message))?;
        tracing::info!(id = self.id, revision = self.revision, %commit, files = ?plan.fetch, "downloading");

        // Every file is read at the listed commit, even if the branch moves meanwhile. hf-hub then
        // writes `refs/{commit}`, which huggingface_hub never does: removed again below.
        let pinned = self.api.repo(Repo::with_revision(
            self.id.into(),
            RepoType::Model,
            commit.clone(),
        ));
        let snapshot = self.repo_dir.join("snapshots").join(&commit);
        let commit_ref = self.repo_dir.join("refs").join(&commit);
        let had_commit_ref = commit_ref.exists();
        let fetched = self.fetch_all(&pinned, &snapshot, &plan);
        if !had_commit_ref {
            let _ = fs::remove_file(&commit_ref);
        }
        fetched?;

        let no_exist = self.repo_dir.join(".no_exist").join(&commit);
        for name in &plan.absent {
            let path = no_exist.join(name);
            fs::create_dir_all(&no_exist).map_err(|e| Error::io(&no_exist, e))?;
            fs::write(&path, "").map_err(|e| Error::io(&path, e))?;
        }
        if self.revision != commit {
            let path = self.repo_dir.join("refs").join(self.revision);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            fs::write(&path, &commit).map_err(|e| Error::io(&path, e))?;
        }
        Ok(snapshot)
    }

    /// Fetches the planned files, then the shards of a sharded checkpoint.
    fn fetch_all(&self, repo: &ApiRepo, snapshot: &Path, plan: &Plan) -> Result<()> {
        for name in &plan.fetch {
            self.fetch(repo, snapshot, name)?;
        }
        if plan.sharded {
            for shard in shard_names(&snapshot.join(INDEX_FILE))? {
                self.fetch(repo, snapshot, &shard)?;
            }
        }
        Ok(())
    }

    /// Downloads `name` into `snapshot` unless it is there, and checks its size.
    fn fetch(&self, repo: &ApiRepo, snapshot: &Path, name: &str) -> Result<()> {
        if !is_repo_path(name) {
            let message = "not a file name inside the repository".to_string();
            return Err(self.error(Some(name), message));
        }
        let target = snapshot.join(name);
        if target.is_file() {
            return Ok(());
        }
        tracing::info!(id = self.id, file = name, "downloading");
        let size = Rc::new(Cell::new(None));
        let progress = Tally {
            size: Rc::clone(&size),
            show: self.progress,
            bar: None,
        };
        let path = repo
            .download_with_progress(name, progress)
            .map_err(|e| self.api_error(Some(name), e))?;
        if path != target {
            let message = format!(
                "{} answered another commit than the listed one (`{}`)",
                self.endpoint,
                target.display()
            );
            return Err(self.error(Some(name), message));
        }
        let got = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
        match size.get() {
            Some(size) if got != size as u64 => {
                // A truncated blob must not stay in the cache, where it would be read as complete.
                if let Ok(blob) = fs::canonicalize(&path) {
                    let _ = fs::remove_file(blob);
                }
                let _ = fs::remove_file(&path);
                let message = format!(
                    "got {got} bytes where {} announced {size}: the download was cut or the \
                     server ignored the resumed range; run again (the partial file was removed)",
                    self.endpoint
                );
                Err(self.error(Some(name), message))
            }
            _ => Ok(()),
        }
    }

    /// An [`Error::Download`] about `file` (`None`: the file list).
    fn error(&self, file: Option<&str>, message: String) -> Error {
        Error::Download {
            id: self.id.to_string(),
            revision: self.revision.to_string(),
            file: file.map(String::from),
            message,
        }
    }

    /// An hf-hub error as an [`Error::Download`] that says what to do.
    fn api_error(&self, file: Option<&str>, err: ApiError) -> Error {
        self.error(file, describe(err, self.id, self.endpoint, self.token))
    }
}

/// What went wrong talking to the Hub at `endpoint` about repository `id` (with or without a
/// `token`), and what to do.
fn describe(err: ApiError, id: &str, endpoint: &str, token: bool) -> String {
    const OFFLINE: &str = "or set HF_HUB_OFFLINE=1 to use only the local cache";
    match err {
        ApiError::RequestError(err) => match *err {
            ureq::Error::StatusCode(code) => status_message(code, id, endpoint, token),
            other => format!(
                "cannot reach {endpoint}: {other}. Check the network connection and \
                 HF_ENDPOINT, {OFFLINE}"
            ),
        },
        ApiError::IoError(e) if is_network(&e) => format!(
            "the connection to {endpoint} was cut ({e}). Run again to resume the download, \
             {OFFLINE}"
        ),
        ApiError::IoError(e) => format!("cannot write into the Hugging Face cache: {e}"),
        ApiError::MissingHeader(header) | ApiError::InvalidHeader(header) => format!(
            "{endpoint} answered without a valid `{header}` header: is HF_ENDPOINT a Hugging \
             Face Hub?"
        ),
        ApiError::ParseIntError(_) => format!(
            "{endpoint} answered an invalid Content-Range header: is HF_ENDPOINT a Hugging Face \
             Hub?"
        ),
        ApiError::LockAcquisition(path) => format!(
            "`{}` is locked: another process is downloading this file; run again when it is done",
            path.display()
        ),
        ApiError::InvalidResume => "the partial download (`.part` file) in the repository's \
             blobs folder is longer than the file: delete it and run again"
            .into(),
        other => other.to_string(),
    }
}

/// The message for an HTTP error status from the Hub (to a request with or without a `token`).
fn status_message(code: u16, id: &str, endpoint: &str, token: bool) -> String {
    let page = format!("{endpoint}/{id}");
    let sent = if token {
        "the token sent (HF_TOKEN or the token file) may not read it"
    } else {
        "no token was sent (HF_TOKEN and the token file are unset)"
    };
    match code {
        401 => format!(
            "{endpoint} answered 401 Unauthorized: the repository does not exist, or it is \
             private or gated and {sent}. Check the model id and the revision; for a gated \
             model accept its licence on {page}, and set HF_TOKEN (or run `hf auth login`) to a \
             token of an account that can read it"
        ),
        403 => format!(
            "{endpoint} answered 403 Forbidden: the model is gated or private and {sent}. \
             Accept its licence on {page} while logged in, then set HF_TOKEN to a token of that \
             account"
        ),
        404 => format!(
            "{endpoint} answered 404 Not Found: check the model id and the revision; if the \
             repository is private or gated, set HF_TOKEN to a token that can read it"
        ),
        429 => format!(
            "{endpoint} answered 429 Too Many Requests: try again later (a token in HF_TOKEN \
             raises the limit)"
        ),
        _ => format!(
            "{endpoint} answered HTTP {code}. Try again later, or set HF_HUB_OFFLINE=1 to use \
             only the local cache"
        ),
    }
}

/// Whether an I/O error during a download came from the network rather than the disk.
fn is_network(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut
    ) || e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
}

/// hf-hub's progress callback: remembers the file's size (checked after the download) and,
/// when asked, draws a bar for a large file (indicatif draws only on a terminal).
struct Tally {
    size: Rc<Cell<Option<usize>>>,
    show: bool,
    bar: Option<ProgressBar>,
}

impl Progress for Tally {
    fn init(&mut self, size: usize, filename: &str) {
        self.size.set(Some(size));
        if self.show && size >= BAR_BYTES {
            // hf-hub calls `init` again when a download starts: keep one bar.
            let bar = self.bar.get_or_insert_with(|| ProgressBar::new(0));
            Progress::init(bar, size, filename);
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &mut self.bar {
            Progress::update(bar, size);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &mut self.bar {
            Progress::finish(bar);
            // indicatif leaves the cursor at the end of a finished bar: end its line, so that
            // the next bar or the generated text starts on a line of its own.
            if !bar.is_hidden() {
                let _ = writeln!(io::stderr());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_plan_fetches_what_the_loader_reads_and_nothing_else() {
        let repo = listed(&[
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "pytorch_model.bin",
            "special_tokens_map.json",
            "additional_chat_templates/tool_use.jinja",
            "README.md",
        ]);
        let plan = plan(FileSet::Checkpoint, &repo).unwrap();
        assert_eq!(
            plan.fetch,
            [
                "config.json",
                "tokenizer.json",
                "additional_chat_templates/tool_use.jinja",
                "model.safetensors"
            ]
        );
        let absent = [
            "generation_config.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        ];
        assert_eq!(plan.absent, absent);
        assert!(!plan.sharded);

        let sharded = listed(&[
            "config.json",
            "model.safetensors.index.json",
            "a.safetensors",
        ]);
        let plan = super::plan(FileSet::Checkpoint, &sharded).unwrap();
        assert_eq!(plan.fetch, ["config.json", "model.safetensors.index.json"]);
        assert!(plan.sharded);

        let tokenizer = super::plan(FileSet::Tokenizer, &repo).unwrap();
        assert!(!tokenizer.fetch.iter().any(|f| f.contains("safetensors")));
    }

    #[test]
    fn a_marian_repository_brings_its_sentencepiece_files() {
        let repo = listed(&[
            "config.json",
            "model.safetensors",
            "source.spm",
            "target.spm",
            "vocab.json",
            "tokenizer_config.json",
            "pytorch_model.bin",
        ]);
        let plan = plan(FileSet::Checkpoint, &repo).unwrap();
        assert_eq!(
            plan.fetch,
            [
                "config.json",
                "tokenizer_config.json",
                "source.spm",
                "target.spm",
                "vocab.json",
                "model.safetensors"
            ]
        );
        let tokenizer = super::plan(FileSet::Tokenizer, &repo).unwrap();
        assert!(tokenizer.fetch.contains(&"source.spm".to_string()));
        // A repository with tokenizer.json is read through it, and its .spm files are not fetched.
        let mut fast = repo.clone();
        fast.insert("tokenizer.json".into());
        let plan = super::plan(FileSet::Checkpoint, &fast).unwrap();
        assert!(!plan.fetch.iter().any(|f| f.ends_with(".spm")));
    }

    #[test]
    fn a_repository_lmgen_cannot_load_is_named_before_any_download() {
        let bin_only = listed(&["config.json", "pytorch_model.bin"]);
        let err = plan(FileSet::Checkpoint, &bin_only).unwrap_err();
        assert!(err.contains("never pytorch_model.bin"), "{err}");

        let gguf_only = listed(&["q8.gguf", "f16.gguf", "tokenizer.json"]);
        let err = plan(FileSet::Checkpoint, &gguf_only).unwrap_err();
        assert!(
            err.contains("no config.json") && err.contains("f16.gguf, q8.gguf"),
            "{err}"
        );
        let err = plan(FileSet::Gguf(Path::new("q4.gguf")), &gguf_only).unwrap_err();
        assert!(err.contains("`q4.gguf` is not in the repository"), "{err}");

        let plan = plan(FileSet::Gguf(Path::new("q8.gguf")), &gguf_only).unwrap();
        assert_eq!(plan.fetch, ["q8.gguf", "tokenizer.json"]);
        assert!(plan.absent.contains(&"config.json"));
    }

    #[test]
    fn status_codes_say_what_to_do() {
        let endpoint = "https://huggingface.co";
        let gated = status_message(403, "org/gated", endpoint, true);
        assert!(
            gated.contains("licence on https://huggingface.co/org/gated"),
            "{gated}"
        );
        assert!(
            gated.contains("the token sent") && gated.contains("HF_TOKEN"),
            "{gated}"
        );
        let missing = status_message(404, "org/none", endpoint, false);
        assert!(missing.contains("check the model id") && missing.contains("HF_TOKEN"));
        let unauthorized = status_message(401, "org/none", endpoint, false);
        assert!(unauthorized.contains("does not exist") && unauthorized.contains("no token"));
        assert!(status_message(503, "o/n", endpoint, false).contains("HF_HUB_OFFLINE=1"));
    }
}
