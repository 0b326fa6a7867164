//! The `airlock` command line. Everything it does lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use airlock::app::{self, AppError};
use airlock::cli::feedback::FeedbackRun;
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

/// Which configuration file to use.
#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file [default: `$AIRLOCK_CONFIG`, else
    /// `./config/airlock.yaml`].
    #[arg(long, env = "AIRLOCK_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file given, else `./config/airlock.yaml` when it exists.
    fn path(self) -> anyhow::Result<PathBuf> {
        if let Some(p) = self.config {
            return Ok(p);
        }
        let default = PathBuf::from(DEFAULT_CONFIG);
        if default.is_file() {
            return Ok(default);
        }
        anyhow::bail!(
            "no configuration: `--config` and `$AIRLOCK_CONFIG` are not set, and \
             `./{DEFAULT_CONFIG}` does not exist here; pass `--config FILE`, or run \
             `airlock init` to write a starter configuration in this directory"
        )
    }
}

const DEFAULT_CONFIG: &str = "config/airlock.yaml";

#[derive(Subcommand)]
enum Command {
    /// Write a commented starter config, the schema, an example policy file
    /// and its test cases into DIR; never overwrites.
    Init {
        /// Where to write `config/` and `policies/`.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Agent key helpers.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the gateway.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the configuration, schema and policies; exit 1 on problems.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run policy test cases (default: `<policies>/tests/*.yaml`); exit 1 on a failure.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// Test files [default: `<policies>/tests/*.yaml`].
        files: Vec<PathBuf>,
    },
    /// Print the verdict a call would get, as JSON: an HTTP call
    /// (`--method`, `--path`) or an MCP tool call (`--tool`, `--args`).
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The calling agent's id, as in the config's `agents`.
        #[arg(long)]
        agent: String,
        /// The HTTP method, e.g. `POST`.
        #[arg(long, required_unless_present = "tool")]
        method: Option<String>,
        /// The request path, prefix included, e.g. `/crm/refunds`.
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
        /// The confidence the agent states, from 0 to 1 (`0.63`).
        #[arg(long)]
        confidence: Option<String>,
        /// The reason the agent gives for the call.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cedar schema helpers.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// List and decide held calls through the admin API.
    Approvals {
        /// The admin API's base URL.
        #[arg(
            long,
            global = true,
            env = "AIRLOCK_ADMIN",
            default_value = "http://127.0.0.1:9090"
        )]
        admin: String,
        /// An approver's (or the admin) bearer token.
        #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ApprovalsCmd,
    },
    /// Review sampled calls through the admin API (docs/feedback.md).
    Reviews {
        /// The admin API's base URL.
        #[arg(
            long,
            global = true,
            env = "AIRLOCK_ADMIN",
            default_value = "http://127.0.0.1:9090"
        )]
        admin: String,
        /// A reviewer's (or the admin) bearer token.
        #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ReviewsCmd,
    },
    /// List agents (pause, calls of the last hour, pending holds); pause
    /// or resume one. Operators' commands, through the admin API.
    Agents {
        #[command(flatten)]
        admin: AdminArg,
        #[command(subcommand)]
        command: AgentsCmd,
    },
    /// Pause or resume a route, or one tool of an MCP route.
    Routes {
        #[command(flatten)]
        admin: AdminArg,
        #[command(subcommand)]
        command: RoutesCmd,
    },
    /// Follow the live view: one row per audited call, approval event and
    /// pause, as they happen (admin or approver token).
    Watch {
        #[command(flatten)]
        admin: AdminArg,
        /// Only this agent's events.
        #[arg(long)]
        agent: Option<String>,
        /// Only this route's events.
        #[arg(long)]
        route: Option<String>,
        /// Only events with this verdict (`allow`, `deny`, `hold`, ...).
        #[arg(long)]
        verdict: Option<String>,
    },
    /// Print the daily counters per policy and route or tool, with
    /// suggestions where the evidence is strong (docs/feedback.md).
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back: the UTC days from this long ago to today.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Human judgments as data for evaluating agents.
    Feedback {
        #[command(subcommand)]
        command: FeedbackCmd,
    },
    /// Pause every agent's every call (`--all`).
    Pause {
        #[command(flatten)]
        admin: AdminArg,
        /// Required: the pause covers everything.
        #[arg(long, required = true)]
        all: bool,
        #[command(flatten)]
        how: PauseHow,
    },
    /// Lift the pause of everything (`--all`).
    Resume {
        #[command(flatten)]
        admin: AdminArg,
        /// Required: the pause lifted is the one of everything.
        #[arg(long, required = true)]
        all: bool,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum FeedbackCmd {
    /// Write one JSON line per human judgment to stdout.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back.
        #[arg(long, default_value = "30d")]
        since: String,
        /// A JSON pointer (`/card_number`) whose values are redacted;
        /// repeatable.
        #[arg(long, value_name = "POINTER")]
        redact: Vec<String>,
    },
}

/// Where the admin API is, and whose token to send.
#[derive(clap::Args)]
struct AdminArg {
    /// The admin API's base URL.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_ADMIN",
        default_value = "http://127.0.0.1:9090"
    )]
    admin: String,
    /// An operator's (or the admin) bearer token.
    #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// How a pause stops calls, and why.
#[derive(clap::Args)]
struct PauseHow {
    /// `deny`: refuse calls (403 `paused`) and void pending holds; `hold`:
    /// hold every call the policies allow for an operator.
    #[arg(long, default_value = "deny", value_parser = ["deny", "hold"])]
    mode: String,
    /// Why; agents and approvers read it.
    #[arg(long)]
    reason: String,
}

#[derive(Subcommand)]
enum AgentsCmd {
    /// Each agent with its pause, calls of the last hour by verdict and
    /// pending holds.
    List,
    /// Pause one agent.
    Pause {
        /// The agent's id.
        id: String,
        #[command(flatten)]
        how: PauseHow,
    },
    /// Lift an agent's pause.
    Resume {
        /// The agent's id.
        id: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum RoutesCmd {
    /// Pause a route, or one tool of an MCP route.
    Pause {
        /// The route's name.
        name: String,
        /// Only this tool of the (MCP) route.
        #[arg(long)]
        tool: Option<String>,
        #[command(flatten)]
        how: PauseHow,
    },
    /// Lift a route's (or one tool's) pause.
    Resume {
        /// The route's name.
        name: String,
        /// Only this tool of the (MCP) route.
        #[arg(long)]
        tool: Option<String>,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Read an agent key on stdin and print the `key_sha256` to put in the
    /// config in place of the key itself.
    Hash,
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Ask every MCP route's server for its tools and write their typed
    /// declarations to `<policies>/tools.cedarschema` for review.
    Pull {
        #[command(flatten)]
        config: ConfigArg,
        /// Where to write; defaults to `tools.cedarschema` in the policies directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The client capabilities to declare in the second `initialize`
        /// (servers may list some tools only to clients that have them), as
        /// a JSON object.
        #[arg(long, default_value = airlock::cli::schema_pull::AGENT_CAPABILITIES)]
        capabilities: String,
    },
}

#[derive(Subcommand)]
enum ReviewsCmd {
    /// List review items, newest first (open unless `--status` says otherwise).
    List {
        /// open, claimed, done or all.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        /// Items per page (1 to 500).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Claim the oldest open item (for 10 minutes) and show it.
    Next,
    /// Judge an item: ok, bad or policy_gap.
    Verdict {
        id: String,
        #[arg(value_parser = ["ok", "bad", "policy_gap"])]
        verdict: String,
        #[arg(long)]
        note: Option<String>,
        /// A JSON file (`-` for stdin): what the call or its answer should
        /// have been.
        #[arg(long)]
        correction: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ApprovalsCmd {
    /// List approvals, newest first (pending unless `--status` says otherwise).
    List {
        /// pending, approved, executing, executed, denied, expired, voided or all.
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
    Show {
        /// The approval's id.
        id: String,
    },
    /// Approve a held call, optionally replacing its payload.
    Approve {
        /// The approval's id.
        id: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        /// Replacement JSON body (REST) or tool arguments (MCP).
        #[arg(long = "args")]
        args: Option<String>,
    },
    /// Deny a held call; the reason reaches the agent.
    Deny {
        /// The approval's id.
        id: String,
        /// Why; the agent gets it with its 403.
        #[arg(long)]
        reason: String,
    },
    /// Answer a held call in the tool's place: the agent gets this answer
    /// and the tool is never called.
    Respond {
        /// The approval's id.
        id: String,
        /// A REST call's answer body: a JSON file (`-` reads stdin).
        #[arg(long, value_name = "FILE", conflicts_with = "result")]
        body: Option<PathBuf>,
        /// A REST call's answer status.
        #[arg(long, default_value_t = 200, conflicts_with = "result")]
        status: u16,
        /// An MCP tool call's answer: a JSON file holding the tool result,
        /// `{"content": [...]}` (`-` reads stdin).
        #[arg(long, value_name = "FILE")]
        result: Option<PathBuf>,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

fn main() -> ExitCode {
    airlock::telemetry::init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: Airlock's own errors already
/// name their cause, which anyhow's `{:#}` would print a second time.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { dir } => {
            let written = airlock::cli::init::write_starter(&dir)?;
            for p in &written {
                print_stdout(&format!("wrote {}", p.display()));
            }
            let config = dir.join(DEFAULT_CONFIG);
            print_stdout(&format!(
                "next: airlock check --config {c} && airlock test --config {c} && airlock serve --config {c}",
                c = config.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Hash,
        } => {
            let mut key = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)
                .context("cannot read the key from stdin")?;
            // A trailing newline from `echo` or a terminal is not the key's.
            let key = key.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!key.is_empty(), "no key on stdin: pipe the agent's key in, e.g. `printf %s \"$KEY\" | airlock keys hash`");
            print_stdout(&hex::encode(airlock::config::sha256(key.as_bytes())));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => {
            let config = config.path()?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(app::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => Ok(check(&config.path()?)),
        Command::Report {
            config,
            since,
            json,
        } => feedback(&config.path()?, &since, FeedbackRun::Report { json }),
        Command::Feedback {
            command:
                FeedbackCmd::Export {
                    config,
                    since,
                    redact,
                },
        } => feedback(&config.path()?, &since, FeedbackRun::Export { redact }),
        Command::Schema {
            command:
                SchemaCommand::Pull {
                    config,
                    out,
                    capabilities,
                },
        } => {
            let capabilities: serde_json::Value = serde_json::from_str(&capabilities)
                .ok()
                .filter(serde_json::Value::is_object)
                .with_context(|| {
                    format!("`--capabilities` must be a JSON object, not `{capabilities}`")
                })?;
            let cfg = airlock::config::Config::load(&config.path()?)?;
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let pulled = rt.block_on(airlock::cli::schema_pull::schema_text(
                &cfg,
                &clients,
                &capabilities,
            ))?;
            let out = out.unwrap_or_else(|| cfg.policies.join("tools.cedarschema"));
            std::fs::write(&out, pulled.text)
                .with_context(|| format!("cannot write `{}`", out.display()))?;
            for (route, tools) in &pulled.only_with_capabilities {
                print_stdout(&format!(
                    "route `{route}` lists {} only to clients declaring {capabilities}",
                    tools.join(", ")
                ));
            }
            print_stdout(&format!(
                "wrote {} tool declarations to {}; review them, then run `airlock check`",
                pulled.count,
                out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { config, files } => {
            let config = config.path()?;
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
            let snap = match app::load_snapshot(&config, &clients) {
                Ok(s) => s,
                Err(e) => {
                    print_load_error(&e);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let files = match files.is_empty() {
                true => airlock::cli::policytest::default_files(&snap.config.policies)
                    .map_err(anyhow::Error::msg)?,
                false => files,
            };
            let report = airlock::cli::policytest::run(&snap, &files);
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
            use airlock::cli::approvals_client::{ApprovalsClient, ApprovalsCommand};
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
                ApprovalsCmd::Respond {
                    id,
                    body,
                    status,
                    result,
                    reason,
                } => ApprovalsCommand::Respond {
                    id,
                    status: Some(status),
                    mcp: result.is_some(),
                    answer: result.or(body).map(|f| read_input(&f)).transpose()?,
                    reason,
                },
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let client = ApprovalsClient::new(&admin, token)?;
            let out = rt.block_on(client.run(cmd))?;
            print_stdout(out.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reviews {
            admin,
            token,
            command,
        } => {
            use airlock::cli::approvals_client::{ApprovalsClient, ReviewsCommand};
            let cmd = match command {
                ReviewsCmd::List {
                    status,
                    agent,
                    route,
                    tool,
                    limit,
                } => ReviewsCommand::List {
                    status,
                    agent,
                    route,
                    tool,
                    limit,
                },
                ReviewsCmd::Next => ReviewsCommand::Next,
                ReviewsCmd::Verdict {
                    id,
                    verdict,
                    note,
                    correction,
                } => ReviewsCommand::Verdict {
                    id,
                    verdict,
                    note,
                    correction: correction.map(|f| read_input(&f)).transpose()?,
                },
            };
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let client = ApprovalsClient::new(&admin, token)?;
            let out = rt.block_on(client.run_reviews(cmd))?;
            print_stdout(out.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Agents { admin, command } => {
            use airlock::cli::approvals_client::{OverrideCommand, PauseTarget};
            let cmd = match command {
                AgentsCmd::List => OverrideCommand::ListAgents,
                AgentsCmd::Pause { id, how } => OverrideCommand::Pause {
                    target: PauseTarget::Agent(id),
                    mode: how.mode,
                    reason: how.reason,
                },
                AgentsCmd::Resume { id, reason } => OverrideCommand::Resume {
                    target: PauseTarget::Agent(id),
                    reason,
                },
            };
            run_override(admin, cmd)
        }
        Command::Routes { admin, command } => {
            use airlock::cli::approvals_client::{OverrideCommand, PauseTarget};
            let cmd = match command {
                RoutesCmd::Pause { name, tool, how } => OverrideCommand::Pause {
                    target: PauseTarget::Route { route: name, tool },
                    mode: how.mode,
                    reason: how.reason,
                },
                RoutesCmd::Resume { name, tool, reason } => OverrideCommand::Resume {
                    target: PauseTarget::Route { route: name, tool },
                    reason,
                },
            };
            run_override(admin, cmd)
        }
        Command::Watch {
            admin,
            agent,
            route,
            verdict,
        } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let client =
                airlock::cli::approvals_client::ApprovalsClient::new(&admin.admin, admin.token)?;
            let filter = airlock::cli::approvals_client::WatchFilter {
                agent,
                route,
                verdict,
            };
            rt.block_on(client.watch(&filter, print_stdout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { admin, all: _, how } => run_override(
            admin,
            airlock::cli::approvals_client::OverrideCommand::Pause {
                target: airlock::cli::approvals_client::PauseTarget::All,
                mode: how.mode,
                reason: how.reason,
            },
        ),
        Command::Resume {
            admin,
            all: _,
            reason,
        } => run_override(
            admin,
            airlock::cli::approvals_client::OverrideCommand::Resume {
                target: airlock::cli::approvals_client::PauseTarget::All,
                reason,
            },
        ),
        Command::Explain {
            config,
            agent,
            method,
            path,
            body,
            tool,
            args,
            confidence,
            reason,
        } => {
            let config = config.path()?;
            let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
            let snap = match app::load_snapshot(&config, &clients) {
                Ok(s) => s,
                Err(e) => {
                    print_load_error(&e);
                    return Ok(ExitCode::FAILURE);
                }
            };
            let said =
                airlock::policy::Escalation::from_texts(confidence.as_deref(), reason.as_deref())?;
            let out = match tool {
                Some(tool) => airlock::cli::explain::explain_tool(
                    &snap,
                    &agent,
                    &tool,
                    args.as_deref(),
                    &said,
                )?,
                None => {
                    let headers: Vec<(String, String)> = [
                        (airlock::policy::escalation::CONFIDENCE_HEADER, confidence),
                        (airlock::policy::escalation::REASON_HEADER, reason),
                    ]
                    .into_iter()
                    .filter_map(|(name, v)| v.map(|v| (name.to_string(), v)))
                    .collect();
                    let spec = airlock::cli::explain::HttpCallSpec {
                        agent: &agent,
                        method: method.as_deref().unwrap_or_default(),
                        path: path.as_deref().unwrap_or_default(),
                        body: body.as_deref(),
                        headers: &headers,
                    };
                    airlock::cli::explain::explain_http(&snap, &spec)?
                }
            };
            print_stdout(&serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the configuration and policies, opens the store they name, and
/// prints what `what` makes of them (`report`, `feedback export`).
fn feedback(config: &std::path::Path, since: &str, what: FeedbackRun) -> anyhow::Result<ExitCode> {
    let since =
        airlock::duration::parse_duration(since).map_err(|e| anyhow::anyhow!("`--since`: {e}"))?;
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
    let snap = match app::load_snapshot(config, &clients) {
        Ok(s) => s,
        Err(e) => {
            print_load_error(&e);
            return Ok(ExitCode::FAILURE);
        }
    };
    airlock::cli::feedback::check_store(&snap.config)?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let out = rt.block_on(async {
        let (holds, counters) = app::open_stores(&snap.config.store).await?;
        let now = airlock::clock::now_ms();
        let stores = (holds.as_ref(), counters.as_ref());
        anyhow::Ok(airlock::cli::feedback::run(what, &snap, stores, since, now).await?)
    })?;
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

fn check(config: &std::path::Path) -> ExitCode {
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
    match app::load_snapshot(config, &clients) {
        Ok(snap) => {
            for w in snap.policy.warnings() {
                print_stdout(&format!("warning: {w}"));
            }
            for w in snap.config_warnings() {
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

/// Runs an operator's command against the admin API and prints its answer.
fn run_override(
    admin: AdminArg,
    cmd: airlock::cli::approvals_client::OverrideCommand,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let client = airlock::cli::approvals_client::ApprovalsClient::new(&admin.admin, admin.token)?;
    let out = rt.block_on(client.run_override(cmd))?;
    print_stdout(out.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The text of `file`, or of stdin for `-`.
fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))
}
