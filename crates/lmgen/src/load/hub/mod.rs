//! Downloads from the Hugging Face Hub: a model id that is not in the local cache is fetched into
//! it, as transformers' `from_pretrained` does (huggingface_hub's `hf_hub_download`).
//!
//! The cache is huggingface_hub's, at the root [`super::resolve_model`] reads:
//! `models--{org}--{name}/blobs/{etag}`, `snapshots/{commit}/{file}` (a link to the blob),
//! `refs/{revision}` (the commit), and `.no_exist/{commit}/{file}` for a file the repository does
//! not have. So the next run, a run with `HF_HUB_OFFLINE=1` and Python's huggingface_hub all find
//! what was downloaded. hf-hub fetches each file into `blobs/{etag}.part` first: a download that
//! was cut resumes from there on the next run.
//!
//! Only what lmgen reads is fetched ([`FileSet`]): `config.json`, `generation_config.json`,
//! `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja` and
//! `additional_chat_templates/*.jinja` where the repository has them, then `model.safetensors`, or
//! `model.safetensors.index.json` and every shard its `weight_map` names (or one GGUF file). Never
//! `pytorch_model.bin` (pickle), never code. The repository's file list
//! (`/api/models/{id}/revision/{revision}`) comes first: it pins the commit that every file is
//! read at, and says which optional files exist (no request that is bound to 404).
//!
//! Settings, as huggingface_hub's `constants.py` reads them; each [`HubOptions`] field overrides
//! one: `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN` (else the token file
//! `HF_TOKEN_PATH`, else `$HF_HOME/token`, written by `hf auth login`), `HF_HUB_OFFLINE=1`
//! (transformers' `local_files_only`: the cache only).
//!
//! Differences from transformers: a cached snapshot that has every file is used without asking
//! the Hub whether the branch moved since (transformers sends a HEAD request per file unless
//! offline); pass a commit as the revision to pin one, or delete the snapshot to refresh it. A
//! failed request is not retried: the error says so, and running again resumes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::Cache;

use super::{
    find_snapshot, hub_cache_dir, is_plain_name, parse_model_id, read_json, CONFIG, INDEX_FILE,
    SINGLE_FILE,
};
use crate::error::{Error, Result};

mod download;

use download::Download;

/// huggingface_hub's default `HF_ENDPOINT`.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files this large and up get a progress bar (when [`HubOptions::progress`] is on).
const BAR_BYTES: usize = 1 << 20;

/// Read when present: the generation config ([`crate::GenerationConfig::from_pretrained`]), the
/// tokenizer and its chat template ([`crate::Tokenizer::from_dir`]).
const OPTIONAL_FILES: [&str; 4] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
];

/// A SentencePiece tokenizer's files (Marian: no tokenizer.json), the first one its marker;
/// `target_vocab.json` only with `separate_vocabs`.
const SPM_FILES: [&str; 4] = [
    "source.spm",
    "target.spm",
    "vocab.json",
    "target_vocab.json",
];

/// The folder of named chat templates ([`crate::chat_template::ChatTemplate::from_dir`]).
const EXTRA_TEMPLATES: &str = "additional_chat_templates/";

/// Which files of a repository the caller reads, and so which ones [`fetch_model`] downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSet<'a> {
    /// What [`crate::Pipeline::load`] reads of a transformers checkpoint: `config.json`
    /// (required), the generation config, tokenizer and chat template files the repository has,
    /// and the safetensors weights (`model.safetensors`, else the index and its shards).
    Checkpoint,
    /// A GGUF file of the repository (a path inside it: `gguf_file`), with the config, generation
    /// config, tokenizer and chat template files the repository has.
    Gguf(&'a Path),
    /// What `AutoTokenizer.from_pretrained` reads: `config.json` (required), the tokenizer and
    /// chat template files. No weights.
    Tokenizer,
}

impl FileSet<'_> {
    /// The file a snapshot must have to count (as in [`super::resolve_model`]), as a path inside
    /// the repository; `None` for a GGUF file that is not one (an absolute path, `..`).
    fn required(&self) -> Option<String> {
        match self {
            FileSet::Checkpoint | FileSet::Tokenizer => Some(CONFIG.to_string()),
            FileSet::Gguf(file) => file.to_str().filter(|f| is_repo_path(f)).map(String::from),
        }
    }

    /// The files read when the repository has them.
    fn optional(&self) -> Vec<&'static str> {
        let mut files = match self {
            FileSet::Gguf(_) => vec![CONFIG],
            FileSet::Checkpoint | FileSet::Tokenizer => Vec::new(),
        };
        match self {
            FileSet::Tokenizer => files.extend(&OPTIONAL_FILES[1..]),
            FileSet::Checkpoint | FileSet::Gguf(_) => files.extend(OPTIONAL_FILES),
        }
        files
    }
}

/// Where and how model ids are downloaded: the hub arguments of transformers' `from_pretrained`
/// (`revision`, `token`, `cache_dir`, `local_files_only`). `None` / `false` fields take
/// huggingface_hub's environment variables, so [`HubOptions::default`] behaves as transformers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Branch, tag or commit to load (`revision`). `None`: the id's `@revision`, else `main`.
    pub revision: Option<String>,
    /// Access token for private and gated repositories (`token`). `None`: `HF_TOKEN`, else the
    /// token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// The hub cache root (`cache_dir`). `None`: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// The Hub's URL. `None`: `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Use the cache only, never the network (`local_files_only`); `HF_HUB_OFFLINE=1` does too.
    pub local_files_only: bool,
    /// Draw a progress bar on stderr (when it is a terminal) for each file of 1 MiB or more, unless
    /// `HF_HUB_DISABLE_PROGRESS_BARS=1`. Off by default: the library does not print; the `lmgen`
    /// binaries turn it on.
    pub progress: bool,
}

impl fmt::Debug for HubOptions {
    /// Like a derived `Debug`, with the token hidden (load options are logged).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("local_files_only", &self.local_files_only)
            .field("progress", &self.progress)
            .finish()
    }
}

/// Resolves `id_or_dir` as [`super::resolve_model`] does (a directory as is; a model id
/// `org/name[@revision]` from the hub cache), downloading what a model id needs of `files` when
/// the cache does not have it all, and returns the directory that holds the files.
///
/// Offline (`HF_HUB_OFFLINE=1` or [`HubOptions::local_files_only`]) a cached snapshot is used as
/// it is, and a model id that is not cached is [`Error::ModelNotFound`] saying so. A failed
/// download is [`Error::Download`], whose message says what to do (check the id, set `HF_TOKEN`,
/// accept a gated model's licence, run again to resume, or go offline).
pub fn fetch_model(id_or_dir: &str, files: FileSet<'_>, options: &HubOptions) -> Result<PathBuf> {
    let settings = Settings::new(options, |key| std::env::var_os(key));
    fetch_with(id_or_dir, files, options.revision.as_deref(), &settings)
}

/// [`fetch_model`] with the environment already read.
fn fetch_with(
    id_or_dir: &str,
    files: FileSet<'_>,
    revision: Option<&str>,
    settings: &Settings,
) -> Result<PathBuf> {
    let caches: Vec<PathBuf> = settings.cache.iter().cloned().collect();
    let path = Path::new(id_or_dir);
    let (Some((repo, at)), false, Some(required)) =
        (parse_model_id(id_or_dir), path.exists(), files.required())
    else {
        // A directory, a file, not a model id, or a GGUF path outside the repository: resolved
        // locally, with the usual errors.
        return match files {
            FileSet::Gguf(file) => super::resolve_gguf_dir_in(id_or_dir, file, &caches),
            FileSet::Checkpoint => super::resolve_model_in(id_or_dir, &caches),
            FileSet::Tokenizer => super::resolve_tokenizer_in(id_or_dir, &caches),
        };
    };
    let revision = merge_revision(id_or_dir, at, revision)?;
    let mut looked = vec![format!("`{}` (no such directory)", path.display())];
    let Some(cache) = &settings.cache else {
        looked.push("no Hugging Face cache (HOME, HF_HOME and HF_HUB_CACHE unset)".into());
        return Err(not_found(id_or_dir, looked));
    };
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    // Online, a missing `refs/main` means "download main", not "use another cached snapshot".
    let wanted = match revision {
        None if !settings.offline => Some("main"),
        other => other,
    };
    if let Some(dir) = find_snapshot(&repo_dir, wanted, &required, &mut looked) {
        let missing = missing_files(&repo_dir, &dir, files);
        if missing.is_empty() || settings.offline {
            tracing::debug!(id = id_or_dir, dir = %dir.display(), "found in HF cache");
            return Ok(dir);
        }
        tracing::info!(id = id_or_dir, ?missing, "cached snapshot is incomplete");
    }
    if settings.offline {
        looked.push(
            "offline mode is on (HF_HUB_OFFLINE=1 or local_files_only), so nothing was \
             downloaded: unset it to download"
                .into(),
        );
        return Err(not_found(id_or_dir, looked));
    }
    let download = Download {
        id: repo,
        revision: revision.unwrap_or("main"),
        endpoint: &settings.endpoint,
        api: settings.api(cache)?,
        repo_dir,
        progress: settings.progress,
        token: settings.token.is_some(),
    };
    download.run(files)
}

/// [`Error::ModelNotFound`] listing every place looked.
fn not_found(id: &str, looked: Vec<String>) -> Error {
    Error::ModelNotFound {
        id: id.to_string(),
        looked: looked.join("; "),
    }
}

/// The revision of `id`: its `@revision` or the option (they must agree when both are given).
fn merge_revision<'a>(
    id: &str,
    at: Option<&'a str>,
    option: Option<&'a str>,
) -> Result<Option<&'a str>> {
    match (at, option) {
        (Some(at), Some(option)) if at != option => Err(Error::input(format!(
            "model id `{id}` names revision `{at}` but the revision option is `{option}`: give one"
        ))),
        (at, option) => match at.or(option) {
            Some(r) if !r.split('/').all(is_plain_name) => Err(Error::input(format!(
                "revision `{r}` is not a branch, tag or commit name"
            ))),
            revision => Ok(revision),
        },
    }
}

/// A path inside a repository that stays inside a cache folder: relative, no `.` or `..`.
fn is_repo_path(name: &str) -> bool {
    name.split('/').all(is_plain_name)
}

/// [`HubOptions`] completed from the environment.
#[derive(Debug, PartialEq, Eq)]
struct Settings {
    cache: Option<PathBuf>,
    endpoint: String,
    token: Option<String>,
    offline: bool,
    progress: bool,
}

impl Settings {
    /// Each field from `options`, else from the environment (`var`), as huggingface_hub does.
    fn new(options: &HubOptions, var: impl Fn(&str) -> Option<OsString>) -> Self {
        let get = |key: &str| {
            var(key)
                .filter(|v| !v.is_empty())
                .map(|v| v.to_string_lossy().into_owned())
        };
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| get("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let truthy = |key: &str| {
            get(key).is_some_and(|v| {
                matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
            })
        };
        Self {
            cache: options.cache_dir.clone().or_else(|| hub_cache_dir(&var)),
            endpoint,
            token: options.token.clone().or_else(|| token(&var)),
            offline: options.local_files_only || truthy("HF_HUB_OFFLINE"),
            progress: options.progress && !truthy("HF_HUB_DISABLE_PROGRESS_BARS"),
        }
    }

    /// An hf-hub client for the cache root `cache`; the endpoint is checked here, so that a bad
    /// `HF_ENDPOINT` does not stop local directories from loading.
    fn api(&self, cache: &Path) -> Result<Api> {
        let endpoint = &self.endpoint;
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(Error::input(format!(
                "the Hub endpoint `{endpoint}` (HF_ENDPOINT) must start with http:// or https://"
            )));
        }
        ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
            .with_endpoint(self.endpoint.clone())
            .with_token(self.token.clone())
            .with_progress(false)
            .with_user_agent("lmgen", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::input(format!("cannot set up the Hub client: {e}")))
    }
}

/// The access token as huggingface_hub's `get_token` finds it: `HF_TOKEN` (or the older
/// `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`, else `$HF_HOME/token`.
fn token(var: impl Fn(&str) -> Option<OsString>) -> Option<String> {
    let get = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    let clean = |t: &str| Some(t.trim().to_string()).filter(|t| !t.is_empty());
    if let Some(token) = get("HF_TOKEN").or_else(|| get("HUGGING_FACE_HUB_TOKEN")) {
        return clean(&token.to_string_lossy());
    }
    let file = get("HF_TOKEN_PATH").or_else(|| {
        let home = get("HF_HOME")
            .or_else(|| get("XDG_CACHE_HOME").map(|x| x.join("huggingface")))
            .or_else(|| get("HOME").map(|h| h.join(".cache").join("huggingface")))?;
        Some(home.join("token"))
    })?;
    clean(&fs::read_to_string(file).ok()?)
}

/// The files of `files` that the cached `snapshot` lacks: neither in it nor recorded in
/// `.no_exist/{commit}/` as absent from the repository. A sharded checkpoint needs every shard.
fn missing_files(repo_dir: &Path, snapshot: &Path, files: FileSet<'_>) -> Vec<String> {
    let no_exist = repo_dir
        .join(".no_exist")
        .join(snapshot.file_name().unwrap_or_default());
    let settled = |name: &str| snapshot.join(name).is_file() || no_exist.join(name).is_file();
    let mut missing: Vec<String> = files
        .optional()
        .into_iter()
        .filter(|name| !settled(name))
        .map(String::from)
        .collect();
    if files == FileSet::Checkpoint && !snapshot.join(SINGLE_FILE).is_file() {
        let index = snapshot.join(INDEX_FILE);
        match shard_names(&index) {
            Ok(shards) => {
                missing.extend(shards.into_iter().filter(|s| !snapshot.join(s).is_file()))
            }
            Err(_) if index.is_file() => missing.push(INDEX_FILE.into()), // the loader will say why
            Err(_) => missing.push(SINGLE_FILE.into()),
        }
    }
    missing
}

/// The shard files that `model.safetensors.index.json` maps tensors to, each once.
fn shard_names(index: &Path) -> Result<BTreeSet<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index: Index = read_json(index)?;
    Ok(index.weight_map.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.into())
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::new(&HubOptions::default(), env(pairs))
    }

    #[test]
    fn settings_come_from_the_environment_as_in_huggingface_hub() {
        let s = settings(&[("HOME", "/u")]);
        assert_eq!(s.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(s.cache, Some("/u/.cache/huggingface/hub".into()));
        assert_eq!(s.token, None);
        assert!(!s.offline);

        let s = settings(&[
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_OFFLINE", "true"),
        ]);
        assert_eq!(s.endpoint, "http://127.0.0.1:8080");
        assert_eq!(s.cache, Some("/c".into()));
        assert_eq!(s.token.as_deref(), Some("hf_abc"));
        assert!(s.offline);
        for (value, offline) in [("1", true), ("ON", true), ("yes", true), ("0", false)] {
            let s = settings(&[("HF_HUB_OFFLINE", value)]);
            assert_eq!(s.offline, offline, "HF_HUB_OFFLINE={value}");
        }

        let bad = settings(&[("HF_ENDPOINT", "huggingface.co")]);
        let err = bad.api(Path::new("/nonexistent")).unwrap_err();
        assert!(
            err.to_string().contains("`huggingface.co` (HF_ENDPOINT)"),
            "{err}"
        );
    }

    #[test]
    fn options_override_the_environment() {
        let options = HubOptions {
            token: Some("t".into()),
            cache_dir: Some("/mine".into()),
            endpoint: Some("https://mirror.example".into()),
            local_files_only: true,
            ..HubOptions::default()
        };
        let pairs = [("HF_TOKEN", "env"), ("HF_HUB_CACHE", "/c")];
        let s = Settings::new(&options, env(&pairs));
        assert_eq!(s.token.as_deref(), Some("t"));
        assert_eq!(s.cache, Some("/mine".into()));
        assert_eq!(s.endpoint, "https://mirror.example");
        assert!(s.offline);
        assert!(!format!("{options:?}").contains("\"t\""), "{options:?}");
    }

    #[test]
    fn the_token_file_is_read_when_hf_token_is_unset() {
        let home = tempfile::tempdir().unwrap();
        let home_str = home.path().to_str().unwrap();
        std::fs::write(home.path().join("token"), "hf_file\n").unwrap();
        assert_eq!(
            token(env(&[("HF_HOME", home_str)])).as_deref(),
            Some("hf_file")
        );
        let pairs = [("HF_HOME", home_str), ("HF_TOKEN", "hf_env")];
        assert_eq!(token(env(&pairs)).as_deref(), Some("hf_env"));
        let elsewhere = home.path().join("elsewhere");
        std::fs::write(&elsewhere, "hf_path").unwrap();
        let pairs = [
            ("HF_HOME", home_str),
            ("HF_TOKEN_PATH", elsewhere.to_str().unwrap()),
        ];
        assert_eq!(token(env(&pairs)).as_deref(), Some("hf_path"));
        std::fs::write(home.path().join("token"), "\n").unwrap();
        assert_eq!(token(env(&[("HF_HOME", home_str)])), None);
    }

    #[test]
    fn the_id_revision_and_the_option_must_agree() {
        assert_eq!(merge_revision("o/n", None, None).unwrap(), None);
        assert_eq!(
            merge_revision("o/n@v1", Some("v1"), None).unwrap(),
            Some("v1")
        );
        assert_eq!(merge_revision("o/n", None, Some("v2")).unwrap(), Some("v2"));
        assert_eq!(
            merge_revision("o/n@v1", Some("v1"), Some("v1")).unwrap(),
            Some("v1")
        );
        let err = merge_revision("o/n@v1", Some("v1"), Some("v2")).unwrap_err();
        assert!(
            err.to_string().contains("`o/n@v1` names revision `v1`"),
            "{err}"
        );
        let pr = merge_revision("o/n", None, Some("refs/pr/1")).unwrap();
        assert_eq!(pr, Some("refs/pr/1"));
        let err = merge_revision("o/n", None, Some("../x")).unwrap_err();
        assert!(err.to_string().contains("revision `../x`"), "{err}");
    }

    #[test]
    fn a_snapshot_is_complete_when_every_file_is_there_or_known_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path();
        let snapshot = repo.join("snapshots").join("abc");
        std::fs::create_dir_all(&snapshot).unwrap();
        for f in [
            "config.json",
            "tokenizer.json",
            "model.safetensors.index.json",
        ] {
            std::fs::write(snapshot.join(f), "{}").unwrap();
        }
        let index = r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s1.safetensors"}}"#;
        std::fs::write(snapshot.join(INDEX_FILE), index).unwrap();
        std::fs::write(snapshot.join("s1.safetensors"), "").unwrap();
        let missing = missing_files(repo, &snapshot, FileSet::Checkpoint);
        let expected = [
            "generation_config.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "s2.safetensors",
        ];
        assert_eq!(missing, expected);

        let no_exist = repo.join(".no_exist").join("abc");
        std::fs::create_dir_all(&no_exist).unwrap();
        for f in &expected[..3] {
            std::fs::write(no_exist.join(f), "").unwrap();
        }
        assert_eq!(
            missing_files(repo, &snapshot, FileSet::Checkpoint),
            ["s2.safetensors"]
        );
        assert!(missing_files(repo, &snapshot, FileSet::Tokenizer).is_empty());
        std::fs::write(snapshot.join("s2.safetensors"), "").unwrap();
        assert!(missing_files(repo, &snapshot, FileSet::Checkpoint).is_empty());
    }
}
