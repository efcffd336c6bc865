use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a broken one is worth a warning below.
    let dotenv = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
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
