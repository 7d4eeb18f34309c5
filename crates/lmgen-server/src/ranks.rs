//! `--tensor-parallel-size N`: the model split across N ranks, one process each. Rank 0 (the
//! server) runs the engine, which broadcasts every step; ranks 1..N load their part of the model
//! and follow the steps ([`lmgen::engine::follow`]) until rank 0 stops its engine or goes away.
//!
//! The ranks first join a control group over TCP ([`TcpCommunicator`], rank 0 listening), which
//! carries the steps. The model's own collectives run on the CPU over the same group, and on GPUs
//! in an NCCL group whose id rank 0 hands out over it ([`lmgen::parallel::data_group`]; rank `r`
//! runs on GPU `base + r`, `--device cuda:base`). By default rank 0 listens on 127.0.0.1 and
//! starts ranks 1..N as copies of its own command line; with `--tensor-parallel-listen
//! HOST:PORT` it starts none and waits for ranks started by hand, on this host or others, with
//! `--tensor-parallel-rank R --tensor-parallel-addr HOST:PORT` and the same model flags.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use lmgen::models::{CausalLM, LoadOptions};
use lmgen::parallel::{data_group, Communicator, Shard, TcpCommunicator};
use lmgen::Pipeline;

use crate::ServeArgs;

/// How long a rank waits for rank 0 to listen.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// The processes of the ranks rank 0 started, reaped when the server stops
/// ([`wait_for_ranks`]).
static RANKS: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// A rank's groups: `control` carries the engine's steps, `data` the model's collectives (the
/// same group on the CPU); `options` load the model on the device `data` was made for (opened
/// once: an NCCL group works on that device's stream).
pub struct Groups {
    pub control: Arc<dyn Communicator>,
    pub data: Arc<dyn Communicator>,
    pub options: LoadOptions,
}

/// `args` as rank `rank` runs them: on a GPU, the GPU `rank` places after `--device`'s.
fn rank_args(args: &ServeArgs, rank: u16) -> anyhow::Result<ServeArgs> {
    let mut args = args.clone();
    if let Some(base) = lmgen::device::gpu_index(&args.model.device)? {
        args.model.device = format!("cuda:{}", base + usize::from(rank));
    }
    Ok(args)
}

/// Rank 0: starts the other ranks (unless `--tensor-parallel-listen`) and joins them; `None`
/// without `--tensor-parallel-size`.
pub fn start_ranks(args: &ServeArgs) -> anyhow::Result<Option<Groups>> {
    let n = usize::from(args.tensor_parallel_size);
    if n == 1 {
        return Ok(None);
    }
    let listen = args
        .tensor_parallel_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("tensor-parallel ranks: listening on {listen}"))?;
    let addr = listener.local_addr()?;
    if args.tensor_parallel_listen.is_none() {
        let exe = std::env::current_exe().context("tensor-parallel ranks: this executable")?;
        let argv: Vec<String> = std::env::args().skip(1).collect();
        for rank in 1..n {
            // In a process group of its own: a terminal's Ctrl-C reaches rank 0 only, whose
            // engine then stops the other ranks (a rank whose rank 0 is gone exits on its own).
            let child = Command::new(&exe)
                .process_group(0)
                .args(&argv)
                .args(["--tensor-parallel-rank", &rank.to_string()])
                .args(["--tensor-parallel-addr", &addr.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting tensor-parallel rank {rank}"))?;
            RANKS
                .lock()
                .map_err(|_| anyhow::anyhow!("the list of ranks is poisoned"))?
                .push(child);
        }
    }
    tracing::info!(ranks = n, %addr, "waiting for the tensor-parallel ranks");
    let control: Arc<dyn Communicator> = Arc::new(TcpCommunicator::root(&listener, n)?);
    let args = rank_args(args, 0)?;
    let options = args.model.load_options()?;
    let data = data_group(&control, &options.device)?;
    Ok(Some(Groups {
        control,
        data,
        options,
    }))
}

/// Rank `rank`'s part of the model (and the whole tokenizer), loaded with `options` (on the
/// device its `data` group was made for).
fn load_part(
    args: &ServeArgs,
    rank: u16,
    options: &LoadOptions,
    data: &Arc<dyn Communicator>,
) -> anyhow::Result<Pipeline> {
    let id_or_dir = args.model.model_or_default();
    let pipe = Pipeline::load_sharded(&id_or_dir, options, &Shard::new(data.clone()))
        .with_context(|| format!("loading rank {rank} of `{id_or_dir}`"))?;
    lmgen::allocator::reuse_freed_memory();
    Ok(pipe)
}

/// Rank 0's part of the model and the whole tokenizer.
pub fn load_rank0(args: &ServeArgs, groups: &Groups) -> anyhow::Result<Pipeline> {
    load_part(args, 0, &groups.options, &groups.data)
}

/// Ranks 1..N: joins rank 0, loads this rank's part and follows the engine's steps.
pub fn follow(args: &ServeArgs, rank: u16) -> anyhow::Result<()> {
    let addr: SocketAddr = args
        .tensor_parallel_addr
        .context("--tensor-parallel-rank needs --tensor-parallel-addr")?;
    let n = usize::from(args.tensor_parallel_size);
    let control: Arc<dyn Communicator> = Arc::new(TcpCommunicator::member(
        addr,
        (usize::from(rank), n),
        CONNECT_TIMEOUT,
    )?);
    let options = rank_args(args, rank)?.model.load_options()?;
    let data = data_group(&control, &options.device)?;
    let model: Arc<dyn CausalLM> = Arc::from(load_part(args, rank, &options, &data)?.model);
    let engine = args.engine_config(model.config(), model.dtype())?;
    let dtype = model.dtype();
    tracing::info!(rank, ranks = n, "following rank 0's engine");
    lmgen::engine::follow(model, &engine, dtype, control)
        .with_context(|| format!("tensor-parallel rank {rank}"))?;
    Ok(())
}

/// Waits up to `timeout` for the ranks rank 0 started to exit (they do once the engine stops),
/// then kills what is left.
pub fn wait_for_ranks(timeout: Duration) {
    let Ok(mut ranks) = RANKS.lock() else { return };
    let deadline = Instant::now() + timeout;
    for child in ranks.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) if !status.success() => {
                    tracing::warn!(%status, "a tensor-parallel rank failed");
                    break;
                }
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    ranks.clear();
}
