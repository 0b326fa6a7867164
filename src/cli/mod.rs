//! Code only the command line uses.

pub mod init;
