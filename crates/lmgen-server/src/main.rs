//! `lmgen-server`: the OpenAI-compatible server (the same as `lmgen serve`).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "lmgen-server", about = "OpenAI-compatible server for lmgen")]
struct Cli {
    #[command(flatten)]
    serve: lmgen_server::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // As `lmgen` does: candle's small elementwise ops on the calling thread (its spinning pool
    // stalls on shared cores); the matrix products run on rayon.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(lmgen_server::serve(cli.serve))
}
