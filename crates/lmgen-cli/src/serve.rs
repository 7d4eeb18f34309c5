//! `lmgen serve`: the OpenAI-compatible server (crate `lmgen-server`) on a multi-threaded tokio
//! runtime; the engine runs on its own thread.

use lmgen_server::ServeArgs;

/// Serves until SIGTERM / Ctrl-C.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(lmgen_server::serve(args))
}
