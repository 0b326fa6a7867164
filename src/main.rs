//! The `airlock` command line. Everything it does lives in the library; the
//! arguments are `airlock::cli::args`, and this file sends each subcommand
//! to the library call that does it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use airlock::app::{self, AppError};
use airlock::cli::approvals_client::{
    ApprovalsClient, ApprovalsCommand, OverrideCommand, PauseTarget, ReviewsCommand, WatchFilter,
};
use airlock::cli::args::{
    AdminArg, ApprovalsCmd, Cli, Command, ConfigArg, ExplainArgs, FeedbackCmd, KeysCommand,
    ReviewsCmd, SchemaCommand, DEFAULT_CONFIG,
};
use airlock::cli::feedback::FeedbackRun;
use airlock::config::ConfigError;
use airlock::snapshot::GatewaySnapshot;
use airlock::upstream::UpstreamClients;

// mimalloc unless built with `--no-default-features` (see Cargo.toml for why).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Init { dir } => init(&dir),
        Command::Keys {
            command: KeysCommand::Hash,
        } => keys_hash(),
        Command::Serve { config } => {
            let config = config.path()?;
            runtime()?.block_on(app::serve(config))?;
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
        Command::Schema { command } => schema_pull(command),
        Command::Test { config, files } => test(config, files),
        Command::Approvals { admin, command } => {
            let cmd = approvals_command(command)?;
            let client = ApprovalsClient::new(&admin.admin, admin.token)?;
            print_answer(runtime()?.block_on(client.run(cmd))?)
        }
        Command::Reviews { admin, command } => {
            let cmd = reviews_command(command)?;
            let client = ApprovalsClient::new(&admin.admin, admin.token)?;
            print_answer(runtime()?.block_on(client.run_reviews(cmd))?)
        }
        Command::Agents { admin, command } => run_override(admin, command.into_override()),
        Command::Routes { admin, command } => run_override(admin, command.into_override()),
        Command::Watch {
            admin,
            agent,
            route,
            verdict,
        } => {
            let client = ApprovalsClient::new(&admin.admin, admin.token)?;
            let filter = WatchFilter {
                agent,
                route,
                verdict,
            };
            runtime()?.block_on(client.watch(&filter, print_stdout))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { admin, all: _, how } => {
            let (mode, reason) = (how.mode, how.reason);
            let target = PauseTarget::All;
            run_override(
                admin,
                OverrideCommand::Pause {
                    target,
                    mode,
                    reason,
                },
            )
        }
        Command::Resume { admin, reason, .. } => {
            let target = PauseTarget::All;
            run_override(admin, OverrideCommand::Resume { target, reason })
        }
        Command::Explain(call) => explain(call),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the runtime")
}

/// `airlock init DIR`: writes the starter files and says what to run next.
fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    let written = airlock::cli::init::write_starter(dir)?;
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

/// `airlock keys hash`: the `key_sha256` of the key on stdin.
fn keys_hash() -> anyhow::Result<ExitCode> {
    let mut key = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut key)
        .context("cannot read the key from stdin")?;
    // A trailing newline from `echo` or a terminal is not the key's.
    let key = key.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(
        !key.is_empty(),
        "no key on stdin: pipe the agent's key in, e.g. `printf %s \"$KEY\" | airlock keys hash`"
    );
    print_stdout(&hex::encode(airlock::config::sha256(key.as_bytes())));
    Ok(ExitCode::SUCCESS)
}

/// The configuration and policies `config` names, or their problems printed
/// (and `None`): the start of every command that reads them.
fn load(config: &Path) -> Option<GatewaySnapshot> {
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
    match app::load_snapshot(config, &clients) {
        Ok(snap) => Some(snap),
        Err(e) => {
            print_load_error(&e);
            None
        }
    }
}

/// `airlock schema pull`: the MCP routes' tools as Cedar declarations.
fn schema_pull(command: SchemaCommand) -> anyhow::Result<ExitCode> {
    let SchemaCommand::Pull {
        config,
        out,
        capabilities,
    } = command;
    let capabilities: serde_json::Value = serde_json::from_str(&capabilities)
        .ok()
        .filter(serde_json::Value::is_object)
        .with_context(|| format!("`--capabilities` must be a JSON object, not `{capabilities}`"))?;
    let cfg = airlock::config::Config::load(&config.path()?)?;
    let clients = UpstreamClients::new(std::time::Duration::from_secs(1), 0);
    let pulled = runtime()?.block_on(airlock::cli::schema_pull::schema_text(
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

/// `airlock test`: runs the policy test cases and prints the report.
fn test(config: ConfigArg, files: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let Some(snap) = load(&config.path()?) else {
        return Ok(ExitCode::FAILURE);
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

/// The admin API request an `approvals` command makes, with any answer file
/// read.
fn approvals_command(command: ApprovalsCmd) -> anyhow::Result<ApprovalsCommand> {
    Ok(match command {
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
    })
}

/// The admin API request a `reviews` command makes, with any correction
/// file read.
fn reviews_command(command: ReviewsCmd) -> anyhow::Result<ReviewsCommand> {
    Ok(match command {
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
    })
}

/// `airlock explain`: the verdict an HTTP or MCP call would get, as JSON.
fn explain(call: ExplainArgs) -> anyhow::Result<ExitCode> {
    let ExplainArgs {
        config,
        agent,
        method,
        path,
        body,
        tool,
        args,
        confidence,
        reason,
    } = call;
    let Some(snap) = load(&config.path()?) else {
        return Ok(ExitCode::FAILURE);
    };
    let said = airlock::policy::Escalation::from_texts(confidence.as_deref(), reason.as_deref())?;
    let out = match tool {
        Some(tool) => {
            airlock::cli::explain::explain_tool(&snap, &agent, &tool, args.as_deref(), &said)?
        }
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

/// Loads the configuration and policies, opens the store they name, and
/// prints what `what` makes of them (`report`, `feedback export`).
fn feedback(config: &Path, since: &str, what: FeedbackRun) -> anyhow::Result<ExitCode> {
    let since =
        airlock::duration::parse_duration(since).map_err(|e| anyhow::anyhow!("`--since`: {e}"))?;
    let Some(snap) = load(config) else {
        return Ok(ExitCode::FAILURE);
    };
    airlock::cli::feedback::check_store(&snap.config)?;
    let out = runtime()?.block_on(async {
        let (holds, counters) = app::open_stores(&snap.config.store).await?;
        let now = airlock::clock::now_ms();
        let stores = (holds.as_ref(), counters.as_ref());
        anyhow::Ok(airlock::cli::feedback::run(what, &snap, stores, since, now).await?)
    })?;
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

/// `airlock check`: the warnings, then a one-line summary or the problems.
fn check(config: &Path) -> ExitCode {
    let Some(snap) = load(config) else {
        return ExitCode::FAILURE;
    };
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
fn run_override(admin: AdminArg, cmd: OverrideCommand) -> anyhow::Result<ExitCode> {
    let client = ApprovalsClient::new(&admin.admin, admin.token)?;
    print_answer(runtime()?.block_on(client.run_override(cmd))?)
}

/// Prints the admin API's answer as the CLI renders it.
fn print_answer(out: String) -> anyhow::Result<ExitCode> {
    print_stdout(out.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// The text of `file`, or of stdin for `-`.
fn read_input(file: &Path) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read `{}`", file.display()))
}
