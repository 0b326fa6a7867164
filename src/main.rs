//! The `airlock` command line. Everything it does lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use airlock::app::{self, AppError};
use airlock::config::ConfigError;
use airlock::upstream::UpstreamClients;

// mimalloc unless built with `--no-default-features` (see Cargo.toml for why).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print the verdict a call would get, as JSON: an HTTP call
    /// (`--method`, `--path`) or an MCP tool call (`--tool`, `--args`).
    Explain {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
        #[arg(long)]
        agent: String,
        #[arg(long, required_unless_present = "tool")]
        method: Option<String>,
        #[arg(long, required_unless_present = "tool")]
        path: Option<String>,
        /// A JSON body.
        #[arg(long)]
        body: Option<String>,
        /// An MCP tool as `ROUTE/TOOL`.
        #[arg(long, conflicts_with_all = ["method", "path", "body"])]
        tool: Option<String>,
        /// The tool call's arguments, a JSON object.
        #[arg(long, requires = "tool")]
        args: Option<String>,
    },
    /// Cedar schema helpers.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// List and decide held calls through the admin API.
    Approvals {
        /// The admin API's base URL.
        #[arg(long, env = "AIRLOCK_ADMIN", default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// An approver's (or the admin) bearer token.
        #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ApprovalsCmd,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Ask every MCP route's server for its tools and write their typed
    /// declarations to `<policies>/tools.cedarschema` for review.
    Pull {
        #[arg(long, default_value = "config/airlock.yaml")]
        config: PathBuf,
        /// Where to write; defaults to `tools.cedarschema` in the policies directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// List approvals, newest first (pending unless `--status` says otherwise).
    List {
        /// pending, approved, executing, executed, denied, expired or all.
        #[arg(long)]
        status: Option<String>,
        /// Approvals per page (1 to 500; the server's default is 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Start at this page (the `--cursor` printed after a page).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page and print them as one list.
        #[arg(long)]
        all: bool,
    },
    /// Show one approval as JSON.
    Show { id: String },
    /// Approve a held call, optionally replacing its payload.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Replacement JSON body (REST) or tool arguments (MCP).
        #[arg(long = "args")]
        args: Option<String>,
    },
    /// Deny a held call; the reason reaches the agent.
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
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
        Command::Schema {
            command: SchemaCommand::Pull { config, out },
        } => {
            let cfg = airlock::config::Config::load(&config)?;
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let (text, count) = rt.block_on(airlock::mcp::pull::schema_text(&cfg, &clients))?;
            let out = out.unwrap_or_else(|| cfg.policies.join("tools.cedarschema"));
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write `{}`", out.display()))?;
            print_stdout(&format!(
                "wrote {count} tool declarations to {}; review them, then run `airlock check`",
                out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { config, files } => {
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
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
        Command::Approvals {
            admin,
            token,
            command,
        } => {
            use airlock::approvals_client::{ApprovalsClient, ApprovalsCommand};
            let cmd = match command {
                ApprovalsCmd::List {
                    status,
                    limit,
                    cursor,
                    all,
                } => ApprovalsCommand::List {
                    status,
                    limit,
                    cursor,
                    all,
                },
                ApprovalsCmd::Show { id } => ApprovalsCommand::Show { id },
                ApprovalsCmd::Approve { id, reason, args } => {
                    ApprovalsCommand::Approve { id, reason, args }
                }
                ApprovalsCmd::Deny { id, reason } => ApprovalsCommand::Deny { id, reason },
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let client = ApprovalsClient::new(&admin, token)?;
            let out = rt.block_on(client.run(cmd))?;
            print_stdout(out.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            config,
            agent,
            method,
            path,
            body,
            tool,
            args,
        } => {
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
            let snap = match app::load_snapshot(&config, &clients) {
                Ok(s) => s,
                Err(e) => {
                    print_load_error(&e);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let out = match tool {
                Some(tool) => {
                    airlock::explain::explain_tool(&snap, &agent, &tool, args.as_deref())?
                }
                None => {
                    let spec = airlock::explain::HttpCallSpec {
                        agent: &agent,
                        method: method.as_deref().unwrap_or_default(),
                        path: path.as_deref().unwrap_or_default(),
                        body: body.as_deref(),
                        headers: &[],
                    };
                    airlock::explain::explain_http(&snap, &spec)?
                }
            };
            print_stdout(&serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
    match app::load_snapshot(config, &clients) {
        Ok(snap) => {
            for w in snap.policy.warnings() {
                print_stdout(&format!("warning: {w}"));
            }
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
