//! The command line's arguments: every subcommand and option `airlock
//! --help` lists, parsed by clap. `main.rs` dispatches them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::approvals_client::{OverrideCommand, PauseTarget};

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "A policy-as-code gateway that puts humans in the loop of AI agents"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Which configuration file to use.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The configuration file [default: `$AIRLOCK_CONFIG`, else
    /// `./config/airlock.yaml`].
    #[arg(long, env = "AIRLOCK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file given, else `./config/airlock.yaml` when it exists.
    pub fn path(self) -> Result<PathBuf, NoConfig> {
        if let Some(p) = self.config {
            return Ok(p);
        }
        let default = PathBuf::from(DEFAULT_CONFIG);
        if default.is_file() {
            return Ok(default);
        }
        Err(NoConfig)
    }
}

/// Where `airlock init` writes the configuration, and where commands look
/// for it when none is named.
pub const DEFAULT_CONFIG: &str = "config/airlock.yaml";

/// No configuration was named and the default one is not here.
#[derive(Debug, thiserror::Error)]
#[error(
    "no configuration: `--config` and `$AIRLOCK_CONFIG` are not set, and \
     `./{DEFAULT_CONFIG}` does not exist here; pass `--config FILE`, or run \
     `airlock init` to write a starter configuration in this directory"
)]
pub struct NoConfig;

#[derive(Subcommand)]
pub enum Command {
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
    Explain(ExplainArgs),
    /// Cedar schema helpers.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// List and decide held calls through the admin API.
    Approvals {
        #[command(flatten)]
        admin: AdminArg,
        #[command(subcommand)]
        command: ApprovalsCmd,
    },
    /// Review sampled calls through the admin API (docs/feedback.md).
    Reviews {
        #[command(flatten)]
        admin: AdminArg,
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
pub enum FeedbackCmd {
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
pub struct AdminArg {
    /// The admin API's base URL.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_ADMIN",
        default_value = "http://127.0.0.1:9090"
    )]
    pub admin: String,
    /// The bearer token: an approver's for `approvals`, a reviewer's for
    /// `reviews`, an operator's for pauses, or the admin token.
    #[arg(long, global = true, env = "AIRLOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// How a pause stops calls, and why.
#[derive(clap::Args)]
pub struct PauseHow {
    /// `deny`: refuse calls (403 `paused`) and void pending holds; `hold`:
    /// hold every call the policies allow for an operator.
    #[arg(long, default_value = "deny", value_parser = ["deny", "hold"])]
    pub mode: String,
    /// Why; agents and approvers read it.
    #[arg(long)]
    pub reason: String,
}

#[derive(Subcommand)]
pub enum AgentsCmd {
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
pub enum RoutesCmd {
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
pub enum KeysCommand {
    /// Read an agent key on stdin and print the `key_sha256` to put in the
    /// config in place of the key itself.
    Hash,
}

#[derive(Subcommand)]
pub enum SchemaCommand {
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
        #[arg(long, default_value = super::schema_pull::AGENT_CAPABILITIES)]
        capabilities: String,
    },
}

#[derive(Subcommand)]
pub enum ReviewsCmd {
    /// List review items, newest first (open unless `--status` says otherwise).
    List {
        /// open, claimed, done or all.
        #[arg(long)]
        status: Option<String>,
        /// Only this agent's calls.
        #[arg(long)]
        agent: Option<String>,
        /// Only this route's calls.
        #[arg(long)]
        route: Option<String>,
        /// Only calls of this MCP tool.
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
        /// The review item's id.
        id: String,
        /// `ok` (the call was fine), `bad` (the agent should not have made
        /// it) or `policy_gap` (a policy should have stopped or held it).
        #[arg(value_parser = ["ok", "bad", "policy_gap"])]
        verdict: String,
        /// What the reviewer saw, for the export and the audit trail.
        #[arg(long)]
        note: Option<String>,
        /// A JSON file (`-` for stdin): what the call or its answer should
        /// have been.
        #[arg(long)]
        correction: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ApprovalsCmd {
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

impl AgentsCmd {
    /// The admin API request this command makes.
    pub fn into_override(self) -> OverrideCommand {
        match self {
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
        }
    }
}

impl RoutesCmd {
    /// The admin API request this command makes.
    pub fn into_override(self) -> OverrideCommand {
        match self {
            RoutesCmd::Pause { name, tool, how } => OverrideCommand::Pause {
                target: PauseTarget::Route { route: name, tool },
                mode: how.mode,
                reason: how.reason,
            },
            RoutesCmd::Resume { name, tool, reason } => OverrideCommand::Resume {
                target: PauseTarget::Route { route: name, tool },
                reason,
            },
        }
    }
}

/// The call `airlock explain` judges.
#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The calling agent's id, as in the config's `agents`.
    #[arg(long)]
    pub agent: String,
    /// The HTTP method, e.g. `POST`.
    #[arg(long, required_unless_present = "tool")]
    pub method: Option<String>,
    /// The request path, prefix included, e.g. `/crm/refunds`.
    #[arg(long, required_unless_present = "tool")]
    pub path: Option<String>,
    /// A JSON body.
    #[arg(long)]
    pub body: Option<String>,
    /// An MCP tool as `ROUTE/TOOL`.
    #[arg(long, conflicts_with_all = ["method", "path", "body"])]
    pub tool: Option<String>,
    /// The tool call's arguments, a JSON object.
    #[arg(long, requires = "tool")]
    pub args: Option<String>,
    /// The confidence the agent states, from 0 to 1 (`0.63`).
    #[arg(long)]
    pub confidence: Option<String>,
    /// The reason the agent gives for the call.
    #[arg(long)]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every subcommand and every option `--help` lists says what it is for.
    #[test]
    fn every_subcommand_and_option_has_a_description() {
        let mut cli = Cli::command();
        cli.build();
        cli.clone().debug_assert();
        let mut undescribed = Vec::new();
        let mut stack = vec![(String::from("airlock"), cli)];
        while let Some((path, cmd)) = stack.pop() {
            if cmd.get_about().is_none() && path != "airlock" {
                undescribed.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    undescribed.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
                }
            }
        }
        assert!(undescribed.is_empty(), "no description: {undescribed:?}");
    }
}
