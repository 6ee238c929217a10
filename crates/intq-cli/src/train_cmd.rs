//! `intq` subcommands: train and QAT fine-tune.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum TrainCommand {}

pub fn run(cmd: TrainCommand) -> Result<()> {
    match cmd {}
}
