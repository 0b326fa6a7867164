//! The `airlock` command line. Everything it does lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use airlock::app::{self, AppError};
use airlock::config::ConfigError;
use airlock::upstream::UpstreamClients;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "A policy-as-code gateway that puts humans in the loop of AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
    },
    /// Validate the configuration, schema and policies; exit 1 on problems.
    Check {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
    },
    /// Print the verdict a call would get, as JSON.
    Explain {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        method: String,
        #[arg(long)]
        path: String,
        /// A JSON body.
        #[arg(long)]
        body: Option<String>,
    },
}

fn main() -> ExitCode {
    airlock::telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(app::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Explain {
            config,
            agent,
            method,
            path,
            body,
        } => {
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1));
            let snap = match app::load_snapshot(&config, &clients) {
                Ok(s) => s,
                Err(e) => {
                    print_load_error(&e);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let spec = airlock::explain::HttpCallSpec {
                agent: &agent,
                method: &method,
                path: &path,
                body: body.as_deref(),
            };
            let out = airlock::explain::explain_http(&snap, &spec)?;
            print_stdout(&serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1));
    match app::load_snapshot(config, &clients) {
        Ok(snap) => {
            print_stdout(&format!(
                "ok: {} policies, {} agents, {} routes (snapshot {})",
                snap.policy.policy_count(),
                snap.config.agents.len(),
                snap.config.routes.len(),
                snap.policy.version()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_load_error(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_load_error(e: &AppError) {
    match e {
        AppError::Config(ConfigError::Invalid(problems)) => {
            for p in problems {
                print_stdout(&p.to_string());
            }
        }
        AppError::Config(c) => {
            for p in c.problems() {
                print_stdout(&p.to_string());
            }
        }
        AppError::Policy(problems) => {
            for p in problems {
                print_stdout(&p.to_string());
            }
        }
        other => print_stdout(&other.to_string()),
    }
}

/// Prints a line, ignoring a closed pipe (`airlock explain ... | head`).
fn print_stdout(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
