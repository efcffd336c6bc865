use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: decoding the log allocates and frees
/// many small values per event, and glibc spent a quarter of a rebuild's
/// CPU consolidating its free lists (perf, docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a broken one is worth a warning below.
    let dotenv = dotenvy::dotenv();
    // WARDEN_LOG_FORMAT=json: one JSON object per line (with the request
    // span's request_id), for log shippers.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    if std::env::var("WARDEN_LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        logs.json().with_current_span(true).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    if let Err(error) = &dotenv {
        if !error.not_found() {
            tracing::warn!(%error, "ignoring unreadable .env file");
        }
    }
    match warden::cli::Cli::parse().run().await {
        Ok(code) => std::process::ExitCode::from(code),
        // 1 is "done, and found a problem" (verify, replay --verify); 2 is
        // "could not do it".
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
