//! `intq` subcommands: .tflite import and export.

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum TfliteCommand {}

pub fn run(cmd: TfliteCommand) -> Result<()> {
    match cmd {}
}
