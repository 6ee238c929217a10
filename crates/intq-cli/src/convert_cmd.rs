//! `intq` subcommands: convert, evaluate, PTQ.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum ConvertCommand {}

pub fn run(cmd: ConvertCommand) -> Result<()> {
    match cmd {}
}
