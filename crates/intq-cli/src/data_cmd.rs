//! `intq` subcommands: fetch and check data sets.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum DataCommand {}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {}
}
