//! Code only the command line uses.

pub mod approvals_client;
pub mod args;
pub mod explain;
pub mod feedback;
pub mod init;
pub mod policytest;
pub mod schema_pull;
