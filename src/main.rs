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
    /// Run policy test cases (default: `<policies>/tests/*.yaml`); exit 1 on a failure.
    Test {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
        files: Vec<PathBuf>,
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
        Command::Test { config, files } => {
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1));
            let snap = match app::load_snapshot(&config, &clients) {
                Ok(s) => s,
                Err(e) => {
                    print_load_error(&e);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let files = match files.is_empty() {
                true => airlock::policytest::default_files(&snap.config.policies)
                    .map_err(anyhow::Error::msg)?,
                false => files,
            };
            let report = airlock::policytest::run(&snap, &files);
            print!("{}", report.render());
            Ok(if report.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
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
                headers: &[],
            };
            let out = airlock::explain::explain_http(&snap, &spec)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1));
    match app::load_snapshot(config, &clients) {
        Ok(snap) => {
            for w in snap.policy.warnings() {
                println!("warning: {w}");
            }
            println!(
                "ok: {} policies, {} agents, {} routes (snapshot {})",
                snap.policy.policy_count(),
                snap.config.agents.len(),
                snap.config.routes.len(),
                snap.policy.version()
            );
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
                println!("{p}");
            }
        }
        AppError::Config(c) => {
            for p in c.problems() {
                println!("{p}");
            }
        }
        AppError::Policy(problems) => {
            for p in problems {
                println!("{p}");
            }
        }
        other => println!("{other}"),
    }
}
