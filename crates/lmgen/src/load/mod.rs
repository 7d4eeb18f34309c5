//! Checkpoint files: a local directory or a Hugging Face cache snapshot -> config + safetensors.
//!
//! Mirrors what transformers' `PreTrainedModel.from_pretrained` (`modeling_utils.py`,
//! `_get_resolved_checkpoint_files`) reads for a safetensors checkpoint: `config.json`, then
//! `model.safetensors`, else the shards listed in `model.safetensors.index.json` (`weight_map`).
//! Model ids are resolved from `huggingface_hub`'s cache layout
//! (`models--{org}--{name}/refs/{revision}` holds a commit hash -> `snapshots/{commit}/`), and
//! downloaded into it from the Hugging Face Hub when missing ([`fetch_model`]: `HF_ENDPOINT`,
//! `HF_TOKEN`, `HF_HUB_OFFLINE`); [`resolve_model`] alone never touches the network. No code from
//! a checkpoint ever runs (`auto_map` / `trust_remote_code` are ignored), and `pytorch_model.bin`
//! (pickle) is never downloaded nor read.
//!
//! Every safetensors header is validated once, at open: header length, JSON, dtype x shape == byte
//! length, offsets contiguous and inside the file (our own checks, for messages that name the
//! tensor), then the audited `SafeTensors::read_metadata` as a second line of defence. After that,
//! reading a tensor is a bounds-checked copy out of the memory map, whose pages are then released
//! (peak resident memory stays near the size of the weights, not twice it).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::models::layers::aligned;
use crate::models::quantize::QuantizedWeight;

mod convert;
pub(crate) mod gguf;
pub(crate) mod hub;

pub(crate) use gguf::GgufArch;
pub use hub::{fetch_model, FileSet, HubOptions};

const CONFIG: &str = "config.json";
const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";
/// safetensors' `MAX_HEADER_SIZE`.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Resolves a checkpoint directory or a Hugging Face model id (`org/name` or `org/name@revision`)
/// to a local directory that contains `config.json`, without network access (see
/// [`fetch_model`] for the same with downloads).
///
/// The hub cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`,
/// else `~/.cache/huggingface/hub` (huggingface_hub's `constants.py`). See [`resolve_model_in`].
pub fn resolve_model(id_or_dir: &str) -> Result<PathBuf> {
    let caches: Vec<PathBuf> = hub_cache_dir(|key| std::env::var_os(key))
        .into_iter()
        .collect();
    resolve_model_in(id_or_dir, &caches)
}

/// [`resolve_model`] with explicit hub cache roots, searched in order.
///
/// An existing directory is used as is. Otherwise, in each cache root, `models--{org}--{name}`:
/// `refs/{revision or main}` names the commit whose `snapshots/{commit}` is used; without that
/// ref, a revision that is itself a snapshot name; without a revision, the most recently modified
/// snapshot. A snapshot counts only if it has `config.json`. [`Error::ModelNotFound`] lists every
/// place looked.
pub fn resolve_model_in(id_or_dir: &str, hub_caches: &[PathBuf]) -> Result<PathBuf> {
    let path = Path::new(id_or_dir);
    if path.is_dir() {
        let config = path.join(CONFIG);
        if config.is_file() {
            return Ok(path.to_path_buf());
        }
        let missing = io::Error::new(io::ErrorKind::NotFound, "a checkpoint needs config.json");
        return Err(Error::io(config, missing));
    }
    if path.exists() {
        let why = io::Error::other("expected a checkpoint directory, found a file");
        return Err(Error::io(path, why));
    }
    search_hub(id_or_dir, hub_caches, CONFIG)
}

/// The directory of a tokenizer: `id_or_dir` when it is a directory with `tokenizer.json` or a
/// Marian tokenizer's `source.spm` (a tokenizer repository needs no `config.json`), else as
/// [`resolve_model_in`], else the snapshot of model id `id_or_dir` that has `tokenizer.json` in the
/// hub cache roots `hub_caches`.
fn resolve_tokenizer_in(id_or_dir: &str, hub_caches: &[PathBuf]) -> Result<PathBuf> {
    let path = Path::new(id_or_dir);
    if path.join("tokenizer.json").is_file() || path.join("source.spm").is_file() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return resolve_model_in(id_or_dir, hub_caches);
    }
    search_hub(id_or_dir, hub_caches, "tokenizer.json")
}

/// The directory that holds `gguf_file` for [`Checkpoint::from_pretrained`]: `id_or_dir` when it
/// is a directory (no `config.json` needed), else the snapshot of model id `id_or_dir` that has
/// the file in the hub cache roots `hub_caches`, searched in order.
fn resolve_gguf_dir_in(
    id_or_dir: &str,
    gguf_file: &Path,
    hub_caches: &[PathBuf],
) -> Result<PathBuf> {
    let path = Path::new(id_or_dir);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    search_hub(id_or_dir, hub_caches, &gguf_file.to_string_lossy())
}

/// Looks for model id `id` in the hub caches: the snapshot that has the file `required`.
fn search_hub(id_or_dir: &str, hub_caches: &[PathBuf], required: &str) -> Result<PathBuf> {
    let path = Path::new(id_or_dir);
    let mut looked = vec![format!("`{}` (no such directory)", path.display())];
    match parse_model_id(id_or_dir) {
        Some((repo, revision)) => {
            if hub_caches.is_empty() {
                looked.push("no Hugging Face cache (HOME, HF_HOME and HF_HUB_CACHE unset)".into());
            }
            let folder = format!("models--{}", repo.replace('/', "--"));
            for cache in hub_caches {
                let repo_dir = cache.join(&folder);
                if let Some(dir) = find_snapshot(&repo_dir, revision, required, &mut looked) {
                    tracing::debug!(id = id_or_dir, dir = %dir.display(), "found in HF cache");
                    return Ok(dir);
                }
            }
        }
        None => looked.push("not a model id of the form `org/name[@revision]`".into()),
    }
    Err(Error::ModelNotFound {
        id: id_or_dir.to_string(),
        looked: looked.join("; "),
    })
}

/// The hub cache root from the environment, as huggingface_hub's `constants.py` computes it.
fn hub_cache_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let get = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    get("HF_HUB_CACHE")
        .or_else(|| get("HUGGINGFACE_HUB_CACHE")) // legacy name, still honoured by huggingface_hub
        .or_else(|| get("HF_HOME").map(|home| home.join("hub")))
        .or_else(|| get("XDG_CACHE_HOME").map(|xdg| xdg.join("huggingface").join("hub")))
        .or_else(|| get("HOME").map(|home| home.join(".cache").join("huggingface").join("hub")))
}

/// Splits `org/name[@revision]`; `None` for anything else (so a typo'd path is not looked up).
fn parse_model_id(id: &str) -> Option<(&str, Option<&str>)> {
    let (repo, revision) = match id.split_once('@') {
        Some((repo, revision)) => (repo, Some(revision)),
        None => (id, None),
    };
    let (org, name) = repo.split_once('/')?;
    let part_ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    // A revision may be a branch with slashes (`refs/pr/1`), never one that leaves the cache.
    let revision_ok = revision.is_none_or(|r| r.split('/').all(is_plain_name));
    (part_ok(org) && part_ok(name) && revision_ok).then_some((repo, revision))
}

/// A single path component: no separators, not `.` or `..`, not empty.
fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\'])
}

/// The snapshot directory of one cached repository, or `None` after noting where it looked.
fn find_snapshot(
    repo: &Path,
    revision: Option<&str>,
    required: &str,
    looked: &mut Vec<String>,
) -> Option<PathBuf> {
    let snapshots = repo.join("snapshots");
    let name = revision.unwrap_or("main");
    let ref_file = repo.join("refs").join(name);
    let dir = match fs::read_to_string(&ref_file) {
        Ok(hash) if is_plain_name(hash.trim()) => snapshots.join(hash.trim()),
        Ok(_) => {
            looked.push(format!("`{}` (not a commit hash)", ref_file.display()));
            return None;
        }
        Err(_) if revision.is_some_and(is_plain_name) && snapshots.join(name).is_dir() => {
            snapshots.join(name)
        }
        Err(_) => {
            looked.push(format!("`{}` (missing)", ref_file.display()));
            // Without an explicit revision, fall back to the newest complete snapshot; with one,
            // silently using another revision would be wrong.
            revision
                .is_none()
                .then(|| newest_snapshot(&snapshots, required, looked))??
        }
    };
    if dir.join(required).is_file() {
        Some(dir)
    } else {
        looked.push(format!("`{}` (no {required})", dir.display()));
        None
    }
}

/// The most recently modified snapshot that has the file `required`.
fn newest_snapshot(snapshots: &Path, required: &str, looked: &mut Vec<String>) -> Option<PathBuf> {
    let Ok(entries) = fs::read_dir(snapshots) else {
        looked.push(format!("`{}` (missing)", snapshots.display()));
        return None;
    };
    let newest = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| dir.join(required).is_file())
        .max_by_key(|dir| fs::metadata(dir).and_then(|m| m.modified()).ok());
    if newest.is_none() {
        looked.push(format!(
            "`{}` (no snapshot with {required})",
            snapshots.display()
        ));
    }
    newest
}

/// A checkpoint directory: its `config.json` and its safetensors weights, opened and validated.
#[derive(Debug)]
pub struct Checkpoint {
    /// The directory the files were read from (a snapshot directory for a cached model id).
    pub dir: PathBuf,
    /// `config.json`, a JSON object; each architecture parses the fields it needs.
    pub config: serde_json::Value,
    /// The memory-mapped weights.
    pub weights: Weights,
}

impl Checkpoint {
    /// Reads `dir/config.json` and opens the weights (see [`Weights`]).
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CONFIG);
        let config: serde_json::Value = read_json(&path)?;
        if !config.is_object() {
            let message = "expected a JSON object at the top level".to_string();
            return Err(Error::Json { path, message });
        }
        let weights = Weights::open(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }

    /// Opens a GGUF file (llama.cpp's format): the config comes from its metadata, the weights
    /// from its tensors; `dir` is where the tokenizer and `generation_config.json` are read from.
    /// See [`Checkpoint::from_pretrained`].
    pub fn open_gguf(dir: &Path, file: &Path) -> Result<Self> {
        if !file.is_file() {
            let missing = io::Error::new(io::ErrorKind::NotFound, "GGUF file not found");
            return Err(Error::io(file, missing));
        }
        let gguf = gguf::GgufWeights::open(file)?;
        let config = gguf.config_json()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights: Weights {
                inner: Inner::Gguf(gguf),
            },
        })
    }

    /// What transformers' `from_pretrained(id_or_dir, gguf_file=..., revision=..., ...)` reads,
    /// with a model id downloaded into the hub cache when it is not there ([`fetch_model`]):
    ///
    /// - without `gguf_file`: the safetensors checkpoint, or, when `id_or_dir` is itself a
    ///   `.gguf` file, that file (tokenizer and generation config from its directory);
    /// - with `gguf_file`: that file inside the checkpoint directory or model id (a path is taken
    ///   as is); the directory needs no `config.json`.
    pub fn from_pretrained(
        id_or_dir: &str,
        gguf_file: Option<&Path>,
        hub: &HubOptions,
    ) -> Result<Self> {
        let path = Path::new(id_or_dir);
        match gguf_file {
            None if path.is_file() && path.extension().is_some_and(|e| e == "gguf") => {
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                Self::open_gguf(dir.unwrap_or(Path::new(".")), path)
            }
            None => Self::open(&fetch_model(id_or_dir, FileSet::Checkpoint, hub)?),
            Some(file) => {
                let dir = fetch_model(id_or_dir, FileSet::Gguf(file), hub)?;
                Self::open_gguf(&dir, &dir.join(file))
            }
        }
    }

    /// The file the config came from: `config.json`, or the GGUF file.
    pub(crate) fn config_path(&self) -> PathBuf {
        match self.weights.gguf_path() {
            Some(path) => path.to_path_buf(),
            None => self.dir.join(CONFIG),
        }
    }

    /// The dtype the checkpoint was saved in: `dtype` (transformers 5) or `torch_dtype`
    /// (transformers 4); `None` if absent or not one of float32, float16, bfloat16.
    pub fn config_dtype(&self) -> Option<DType> {
        let name = ["dtype", "torch_dtype"]
            .iter()
            .find_map(|key| self.config.get(key)?.as_str())?;
        match name.strip_prefix("torch.").unwrap_or(name) {
            "float32" | "float" => Some(DType::F32),
            "float16" | "half" => Some(DType::F16),
            "bfloat16" => Some(DType::BF16),
            _ => None,
        }
    }
}

/// Memory-mapped safetensors files (one, or the shards of `model.safetensors.index.json`), with
/// every header validated at open. Tensors are read by name, checked against the shape the model's
/// config implies, and converted to the compute dtype.
#[derive(Debug)]
pub struct Weights {
    inner: Inner,
}

/// Where the tensors come from.
#[derive(Debug)]
enum Inner {
    Safetensors(Safetensors),
    Gguf(gguf::GgufWeights),
}

/// Memory-mapped safetensors files.
struct Safetensors {
    /// `model.safetensors` or the index file: what errors about missing tensors name.
    source: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, Entry>,
}

/// Where one tensor lives.
struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file (header included), validated against the file length.
    bytes: Range<usize>,
}

impl fmt::Debug for Safetensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<&Path> = self.files.iter().map(|(path, _)| path.as_path()).collect();
        f.debug_struct("Safetensors")
            .field("files", &files)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Safetensors {
    /// Opens `dir/model.safetensors`, else the shards named by `dir/model.safetensors.index.json`
    /// (same order as transformers' `modeling_utils.py`).
    fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::from_files(single.clone(), std::slice::from_ref(&single));
        }
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::from_index(dir, index);
        }
        let message = format!(
            "neither {SINGLE_FILE} nor {INDEX_FILE} found; lmgen loads safetensors only (convert \
             with transformers: model.save_pretrained(dir, safe_serialization=True))"
        );
        Err(weights_error(dir, message))
    }

    /// Sharded checkpoint: every `weight_map` value must be a file name in `dir` that exists, and
    /// every mapped tensor must be in the shard the index names.
    fn from_index(dir: &Path, index: PathBuf) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let parsed: Index = read_json(&index)?;
        let bad = |message| weights_error(&index, message);
        let mut shards: Vec<&str> = parsed.weight_map.values().map(String::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut paths = Vec::with_capacity(shards.len());
        for shard in shards {
            if !is_plain_name(shard) {
                let message = "which is not a file name inside the checkpoint directory";
                return Err(bad(format!("weight_map names `{shard}`, {message}")));
            }
            let path = dir.join(shard);
            if !path.is_file() {
                let missing = format!("`{}` does not exist: incomplete download?", path.display());
                return Err(bad(format!(
                    "weight_map names shard `{shard}` but {missing}"
                )));
            }
            paths.push(path);
        }
        let weights = Self::from_files(index.clone(), &paths)?;
        for (name, shard) in &parsed.weight_map {
            let actual = weights.tensors.get(name).map(|e| &weights.files[e.file].0);
            if actual != Some(&dir.join(shard)) {
                let message = format!("weight_map puts tensor `{name}` in `{shard}`");
                return Err(bad(format!("{message}, but that file has no such tensor")));
            }
        }
        Ok(weights)
    }

    fn from_files(source: PathBuf, paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for path in paths {
            let mmap = map_file(path)?;
            for (name, mut entry) in read_header(path, &mmap)? {
                entry.file = files.len();
                if let Some(first) = tensors.get(&name).map(|e: &Entry| &paths[e.file]) {
                    let message = format!("tensor `{name}` is also in `{}`", first.display());
                    return Err(weights_error(path, message));
                }
                tensors.insert(name, entry);
            }
            files.push((path.clone(), mmap));
        }
        tracing::debug!(
            files = files.len(),
            tensors = tensors.len(),
            "opened weights"
        );
        Ok(Self {
            source,
            files,
            tensors,
        })
    }

    /// Reads tensor `name`, which must have exactly `shape`, converted to `dtype` on `device`.
    ///
    /// Errors name the tensor: not found, a shape other than the one `config.json` implies, or an
    /// on-disk dtype other than F32, F16 and BF16.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let entry = self.entry(name)?;
        if entry.shape != shape {
            let message = format!(
                "tensor `{name}` has shape {:?} but config.json implies {shape:?}",
                entry.shape
            );
            return Err(weights_error(&self.files[entry.file].0, message));
        }
        self.load(name, entry, dtype, device)
    }

    /// [`Weights::get`] without the shape check, for tensors whose layout the caller inspects
    /// itself (the shape is the stored one; see also [`Weights::shape`]).
    pub fn get_unchecked_shape(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.load(name, self.entry(name)?, dtype, device)
    }

    /// Whether a tensor called `name` is stored (e.g. `lm_head.weight` for untied embeddings).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The bytes of the U8 tensor `name`, which must have exactly `shape` (MXFP4 blocks and
    /// scales).
    fn u8s(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let entry = self.entry(name)?;
        let path = &self.files[entry.file].0;
        if entry.dtype != Dtype::U8 || entry.shape != shape {
            let message = format!(
                "tensor `{name}` is {:?} {:?}; U8 {shape:?} expected",
                entry.dtype, entry.shape
            );
            return Err(weights_error(path, message));
        }
        let bytes = self.files[entry.file]
            .1
            .get(entry.bytes.clone())
            .ok_or_else(|| weights_error(path, format!("tensor `{name}`: data out of range")))?;
        Ok(bytes.to_vec())
    }

    /// All stored tensor names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The stored shape of `name`, if it exists.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// The on-disk dtype of `name`; `None` if absent or not F32, F16 or BF16.
    pub fn disk_dtype(&self, name: &str) -> Option<DType> {
        candle_dtype(self.tensors.get(name)?.dtype)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.tensors.get(name).ok_or_else(|| {
            let files: Vec<_> = self
                .files
                .iter()
                .filter_map(|(p, _)| p.file_name())
                .collect();
            let files: Vec<_> = files.iter().map(|f| f.to_string_lossy()).collect();
            let message = format!("tensor `{name}` not found in {}", files.join(", "));
            weights_error(&self.source, message)
        })
    }

    fn load(&self, name: &str, entry: &Entry, dtype: DType, device: &Device) -> Result<Tensor> {
        self.load_part(
            name,
            entry,
            entry.bytes.clone(),
            &entry.shape,
            dtype,
            device,
        )
    }

    /// Rows `rows` of the 2-D tensor `name` (checked against `shape`), as `[rows.len(), cols]`.
    fn get_rows(
        &self,
        name: &str,
        shape: [usize; 2],
        rows: Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let entry = self.entry(name)?;
        let path = &self.files[entry.file].0;
        if entry.shape != shape || rows.end > shape[0] || rows.start > rows.end {
            let message = format!(
                "tensor `{name}` of shape {:?}: rows {rows:?} of {shape:?} asked",
                entry.shape
            );
            return Err(weights_error(path, message));
        }
        let elem = candle_dtype(entry.dtype).map_or(1, |d| d.size_in_bytes());
        let row_bytes = shape[1] * elem;
        let start = entry.bytes.start + rows.start * row_bytes;
        let bytes = start..start + rows.len() * row_bytes;
        self.load_part(name, entry, bytes, &[rows.len(), shape[1]], dtype, device)
    }

    /// The elements of `entry` in `range` (a sub-range of `entry.bytes`) as a tensor of `shape`.
    fn load_part(
        &self,
        name: &str,
        entry: &Entry,
        range: Range<usize>,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let (path, mmap) = &self.files[entry.file];
        let bad = |message| weights_error(path, message);
        let disk = candle_dtype(entry.dtype).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` is stored as {:?}; lmgen loads F32, F16 and BF16 weights only",
                entry.dtype
            ))
        })?;
        let bytes = mmap
            .get(range.clone())
            .ok_or_else(|| bad(format!("tensor `{name}`: data out of range")))?;
        // Convert on the side that moves fewer bytes to the device; `from_raw_buffer` copies, so
        // unaligned offsets in the file are fine. On the host a conversion runs chunk by chunk and
        // gives each chunk's mapped pages back as it goes (see `convert`).
        let on_host = dtype.size_in_bytes() < disk.size_in_bytes() || device.is_cpu();
        let tensor = if on_host && convert::converts(disk, dtype) {
            let start = range.start;
            let release = |r: Range<usize>| release_pages(mmap, start + r.start..start + r.end);
            convert::convert(bytes, disk, dtype, shape, &release)?.to_device(device)?
        } else if let Some(t) = (device.is_cpu() && disk == dtype)
            .then(|| aligned::from_le_bytes(bytes, disk, shape))
            .transpose()?
            .flatten()
        {
            // A copy whose data starts on a cache line (see `aligned`).
            t
        } else if dtype.size_in_bytes() < disk.size_in_bytes() {
            Tensor::from_raw_buffer(bytes, disk, shape, &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)?
        } else {
            Tensor::from_raw_buffer(bytes, disk, shape, device)?.to_dtype(dtype)?
        };
        // The tensor owns a copy now: give the mapped pages back, so that a loaded model's
        // resident memory is its weights, not its weights plus the file.
        release_pages(mmap, range);
        Ok(tensor)
    }
}

impl Weights {
    /// Opens `dir/model.safetensors`, else the shards named by `dir/model.safetensors.index.json`
    /// (same order as transformers' `modeling_utils.py`).
    fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            inner: Inner::Safetensors(Safetensors::open(dir)?),
        })
    }

    /// Reads tensor `name`, which must have exactly `shape`, converted to `dtype` on `device`.
    ///
    /// Errors name the tensor: not found, a shape other than the one `config.json` implies, or an
    /// on-disk dtype other than F32, F16 and BF16 (safetensors; a GGUF file's block types are
    /// dequantized).
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match &self.inner {
            Inner::Safetensors(w) => w.get(name, shape, dtype, device),
            Inner::Gguf(w) => w.get(name, Some(shape), dtype, device),
        }
    }

    /// Rows `rows` of the 2-D tensor `name` (which must have `shape`) as `[rows.len(), cols]`
    /// in `dtype` on `device`: a large weight read a band at a time (quantizing at load holds
    /// one band in f32, not the whole matrix). Safetensors read only those rows; a GGUF file
    /// reads the whole tensor and narrows it (read GGUF tensors whole instead).
    pub(crate) fn get_rows(
        &self,
        name: &str,
        shape: [usize; 2],
        rows: Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        match &self.inner {
            Inner::Safetensors(w) => w.get_rows(name, shape, rows, dtype, device),
            Inner::Gguf(w) => {
                let t = w.get(name, Some(&shape), dtype, device)?;
                Ok(t.narrow(0, rows.start, rows.len())?)
            }
        }
    }

    /// [`Weights::get`] without the shape check, for tensors whose layout the caller inspects
    /// itself (the shape is the stored one; see also [`Weights::shape`]).
    pub fn get_unchecked_shape(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        match &self.inner {
            Inner::Safetensors(w) => w.get_unchecked_shape(name, dtype, device),
            Inner::Gguf(w) => w.get(name, None, dtype, device),
        }
    }

    /// The `[out, in]` weight `name` in its quantized block format, when the file stores it in
    /// one that lmgen's quantized layers run (a GGUF file's Q8_0, Q4_K and Q6_K tensors); `None`
    /// for dense tensors (read those with [`Weights::get`]).
    pub fn quantized(&self, name: &str, shape: &[usize]) -> Result<Option<QuantizedWeight>> {
        match &self.inner {
            Inner::Safetensors(_) => Ok(None),
            Inner::Gguf(w) => w.quantized(name, shape),
        }
    }

    /// The bytes of the U8 tensor `name` of `shape` (MXFP4 blocks and scales of safetensors
    /// checkpoints; a GGUF file has none).
    pub(crate) fn u8s(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        match &self.inner {
            Inner::Safetensors(w) => w.u8s(name, shape),
            Inner::Gguf(_) => Err(Error::unsupported(format!(
                "`{name}`: U8 tensors are read from safetensors checkpoints only"
            ))),
        }
    }

    /// Whether a tensor called `name` is stored (e.g. `lm_head.weight` for untied embeddings).
    /// GGUF tensors answer to their HF names.
    pub fn contains(&self, name: &str) -> bool {
        match &self.inner {
            Inner::Safetensors(w) => w.contains(name),
            Inner::Gguf(w) => w.contains(name),
        }
    }

    /// All stored tensor names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let names: Vec<&str> = match &self.inner {
            Inner::Safetensors(w) => w.names().collect(),
            Inner::Gguf(w) => w.names().collect(),
        };
        names.into_iter()
    }

    /// The stored shape of `name`, if it exists.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        match &self.inner {
            Inner::Safetensors(w) => w.shape(name),
            Inner::Gguf(w) => w.shape(name),
        }
    }

    /// The on-disk dtype of `name`; `None` if absent or not F32, F16 or BF16.
    pub fn disk_dtype(&self, name: &str) -> Option<DType> {
        match &self.inner {
            Inner::Safetensors(w) => w.disk_dtype(name),
            Inner::Gguf(w) => w.disk_dtype(name),
        }
    }

    /// Bytes of `name` when the file stores it in a block format that loads as a
    /// [`QuantizedWeight`] (see [`Weights::quantized`]); `None` otherwise.
    pub fn quantized_bytes(&self, name: &str) -> Option<usize> {
        match &self.inner {
            Inner::Safetensors(_) => None,
            Inner::Gguf(w) => w.quantized_bytes(name),
        }
    }

    /// Whether Gemma's `1 + w` norm weights are stored with the 1 already added (llama.cpp's
    /// Gemma 3 converter): a [`NormKind::RmsUnitOffset`] norm then multiplies by the stored value.
    ///
    /// [`NormKind::RmsUnitOffset`]: crate::models::config::NormKind::RmsUnitOffset
    pub(crate) fn norms_include_unit_offset(&self) -> bool {
        match &self.inner {
            Inner::Safetensors(_) => false,
            Inner::Gguf(w) => w.norms_include_unit_offset(),
        }
    }

    /// The GGUF file the weights come from, if they do.
    pub fn gguf_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Safetensors(_) => None,
            Inner::Gguf(w) => Some(w.path()),
        }
    }
}

/// The compute dtypes lmgen reads weights from.
fn candle_dtype(dtype: Dtype) -> Option<DType> {
    match dtype {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Reads and parses a JSON file: [`Error::Io`] or [`Error::Json`] naming it.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// An [`Error::Weights`] about `path`.
fn weights_error(path: &Path, message: String) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        message,
    }
}

/// Maps a weight file read-only.
#[allow(unsafe_code)]
fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is only read, and every read is bounds-checked against ranges validated at
    // open. Undefined behaviour would need another process to truncate or rewrite the checkpoint
    // while it is loaded; like transformers (`safe_open`) and candle, we accept that assumption.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Drops `range` of a read-only file mapping from this process's resident memory
/// (`madvise(MADV_DONTNEED)`); the data stays in the file and the OS page cache, and a later read
/// of the range faults it back in unchanged. Best effort: an error only means the pages stay.
#[allow(unsafe_code)]
fn release_pages(mmap: &Mmap, range: Range<usize>) {
    #[cfg(unix)]
    {
        // SAFETY: the map is a read-only shared mapping of a file that is not written while it is
        // loaded (see `map_file`). MADV_DONTNEED on such a mapping only unmaps the pages; the next
        // access reads the same bytes from the file again, so no reference into the map can observe
        // a change. memmap2 aligns the range to pages.
        let _ = unsafe {
            mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                range.start,
                range.len(),
            )
        };
    }
    #[cfg(not(unix))]
    let _ = (mmap, range);
}

/// Validates a whole safetensors file and returns its tensors (with `file` left at 0).
fn read_header(path: &Path, buf: &[u8]) -> Result<Vec<(String, Entry)>> {
    let bad = |message| weights_error(path, message);
    let len = buf.len();
    // Layout: [n: u64 LE][n bytes of JSON header][data section].
    let Some((n_bytes, rest)) = buf.split_first_chunk::<8>() else {
        return Err(bad(format!(
            "file has {len} bytes, too few for a safetensors header: truncated or not safetensors?"
        )));
    };
    let n = u64::from_le_bytes(*n_bytes);
    if n > MAX_HEADER_BYTES {
        let limit = format!("over safetensors' limit of {MAX_HEADER_BYTES}: corrupt file?");
        return Err(bad(format!("header length {n} is {limit}")));
    }
    let header = usize::try_from(n)
        .ok()
        .and_then(|n| rest.get(..n))
        .ok_or_else(|| {
            bad(format!(
                "header length is {n} bytes but the file has {len}: truncated?"
            ))
        })?;
    let data_start = 8 + header.len();
    let data_len = len - data_start;
    let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(header)
        .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;

    let mut infos = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor `{name}`: invalid header entry: {e}")))?;
        let (start, end) = info.data_offsets;
        let bits = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |acc, &dim| acc.checked_mul(dim))
            .filter(|bits| bits % 8 == 0)
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{name}`: shape {:?} is too large",
                    info.shape
                ))
            })?;
        if end < start || end - start != bits / 8 {
            let (dtype, shape, size) = (info.dtype, &info.shape, bits / 8);
            let needs = format!("tensor `{name}`: {dtype:?} {shape:?} needs {size} bytes");
            return Err(bad(format!(
                "{needs} but data offsets {start}..{end} disagree"
            )));
        }
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, info)| info.data_offsets);
    let mut expected = 0;
    for (name, info) in &infos {
        let (start, end) = info.data_offsets;
        if start != expected {
            return Err(bad(format!(
                "tensor `{name}`: data offsets {start}..{end} do not start where the previous \
                 tensor ends ({expected}): tensors overlap or leave a gap"
            )));
        }
        if end > data_len {
            let total = infos.last().map_or(0, |(_, i)| i.data_offsets.1);
            return Err(bad(format!(
                "tensor `{name}`: data offsets {start}..{end} out of range: the header says the \
                 file has {} bytes but it has {len}: truncated?",
                total.saturating_add(data_start)
            )));
        }
        expected = end;
    }
    if expected != data_len {
        return Err(bad(format!(
            "{} bytes after the last tensor: not a valid safetensors file",
            data_len - expected
        )));
    }
    // Second line of defence: the audited parser must accept the file too.
    let (n, metadata) = SafeTensors::read_metadata(buf)
        .map_err(|e| bad(format!("invalid safetensors file: {e}")))?;
    let data_start = 8 + n;
    let entries = metadata.tensors().into_iter().map(|(name, info)| {
        let (start, end) = info.data_offsets;
        let entry = Entry {
            file: 0,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: data_start + start..data_start + end,
        };
        (name, entry)
    });
    Ok(entries.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_from_env() {
        fn env<'a>(pairs: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
            move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.into())
        }
        let all = [("HF_HUB_CACHE", "/c"), ("HF_HOME", "/h"), ("HOME", "/u")];
        assert_eq!(hub_cache_dir(env(&all)), Some("/c".into()));
        assert_eq!(hub_cache_dir(env(&all[1..])), Some("/h/hub".into()));
        let xdg = [
            ("HF_HUB_CACHE", ""),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/u"),
        ];
        assert_eq!(hub_cache_dir(env(&xdg)), Some("/x/huggingface/hub".into()));
        let home = [("HOME", "/u")];
        assert_eq!(
            hub_cache_dir(env(&home)),
            Some("/u/.cache/huggingface/hub".into())
        );
        assert_eq!(hub_cache_dir(env(&[])), None);
    }
}
