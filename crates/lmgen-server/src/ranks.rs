//! `--tensor-parallel-size N`: the model split across N ranks, one process each. Rank 0 (the
//! server) listens on 127.0.0.1, starts ranks 1..N as copies of its own command line with
//! `--tensor-parallel-rank` and `--tensor-parallel-addr`, and runs the engine, which broadcasts
//! every step; the others load their part of the model and follow the steps
//! ([`lmgen::engine::follow`]) until rank 0 stops its engine or goes away. The ranks talk over
//! TCP ([`TcpCommunicator`]), which serves CPU runs; GPUs want NCCL's communicator (not wired to
//! a launcher yet).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lmgen::models::CausalLM;
use lmgen::parallel::{Communicator, Shard, TcpCommunicator};
use lmgen::Pipeline;

use crate::ServeArgs;

/// How long a rank waits for rank 0 to listen.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes of ranks 1..N, reaped when the server stops ([`wait_for_ranks`]).
static RANKS: Mutex<Vec<Child>> = Mutex::new(Vec::new());

/// Rank 0: starts the other ranks and connects to them; `None` without `--tensor-parallel-size`.
pub fn start_ranks(args: &ServeArgs) -> anyhow::Result<Option<Arc<dyn Communicator>>> {
    let n = usize::from(args.tensor_parallel_size);
    if n == 1 {
        return Ok(None);
    }
    let options = args.model.load_options()?;
    if !options.device.is_cpu() {
        bail!(
            "--tensor-parallel-size runs its ranks on the CPU (they exchange activations over \
             TCP); GPU ranks need the NCCL launcher, which is not built yet"
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("tensor-parallel ranks: listening")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("tensor-parallel ranks: this executable")?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for rank in 1..n {
        // In a process group of its own: a terminal's Ctrl-C reaches rank 0 only, whose engine
        // then stops the other ranks (and a rank whose rank 0 is gone exits on its own).
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
            .map_err(|_| anyhow::anyhow!("rank list poisoned"))?
            .push(child);
    }
    tracing::info!(ranks = n, %addr, "waiting for the tensor-parallel ranks");
    let comm = TcpCommunicator::root(&listener, n)?;
    Ok(Some(Arc::new(comm)))
}

/// Rank 0's part of the model and the whole tokenizer.
pub fn load_rank0(args: &ServeArgs, comm: &Arc<dyn Communicator>) -> anyhow::Result<Pipeline> {
    let id_or_dir = args.model.model_or_default();
    let options = args.model.load_options()?;
    let pipe = Pipeline::load_sharded(&id_or_dir, &options, &Shard::new(comm.clone()))
        .with_context(|| format!("loading rank 0 of `{id_or_dir}`"))?;
    lmgen::allocator::reuse_freed_memory();
    Ok(pipe)
}

/// Ranks 1..N: connects to rank 0, loads this rank's part and follows the engine's steps.
pub fn follow(args: &ServeArgs, rank: u16) -> anyhow::Result<()> {
    let addr: SocketAddr = args
        .tensor_parallel_addr
        .context("--tensor-parallel-rank needs --tensor-parallel-addr")?;
    let n = usize::from(args.tensor_parallel_size);
    let comm: Arc<dyn Communicator> = Arc::new(TcpCommunicator::member(
        addr,
        (usize::from(rank), n),
        CONNECT_TIMEOUT,
    )?);
    let id_or_dir = args.model.model_or_default();
    let options = args.model.load_options()?;
    let pipe = Pipeline::load_sharded(&id_or_dir, &options, &Shard::new(comm.clone()))
        .with_context(|| format!("loading rank {rank} of `{id_or_dir}`"))?;
    let model: Arc<dyn CausalLM> = Arc::from(pipe.model);
    let engine = args.engine_config(model.config(), model.dtype())?;
    let dtype = model.dtype();
    tracing::info!(rank, ranks = n, "following rank 0's engine");
    lmgen::engine::follow(model, &engine, dtype, comm)
        .with_context(|| format!("tensor-parallel rank {rank}"))?;
    Ok(())
}

/// Waits up to `timeout` for the other ranks to exit (they do once the engine stops), then
/// kills what is left.
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
