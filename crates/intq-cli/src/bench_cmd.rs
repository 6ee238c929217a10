//! `intq` subcommands: benchmarks.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum BenchCommand {}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {}
}
