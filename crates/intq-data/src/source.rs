//! Where a data set comes from: a registry name or a path, which format a path holds, loading
//! any of them into a [`Dataset`], and the summary `intq data info` prints.
//!
//! A source string that is a registry name (`mnist`, `fashion-mnist`) names that data set in the
//! data dir; anything else is a path (write `./mnist` for a folder of that name). A path is, in
//! this order of checks: a `.npz` file; a folder with `x_train.npy`; a CIFAR-10 binary folder
//! (`test_batch.bin` or `data_batch_*.bin`); a CIFAR-100 binary folder (`train.bin` and
//! `test.bin`); an image folder (see [`crate::image_folder`]).

use crate::image_folder::{self, ImageFolderOptions, Manifest, Skipped};
use crate::{cifar, numpy, DataError, Dataset, DatasetKind, Split};
use std::fmt;
use std::path::{Path, PathBuf};

/// The formats a source can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The registry data sets' IDX files.
    Idx,
    ImageFolder,
    Cifar10,
    Cifar100,
    Npz,
    NpyDir,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "IDX files",
            Format::ImageFolder => "image folder",
            Format::Cifar10 => "CIFAR-10 binary",
            Format::Cifar100 => "CIFAR-100 binary",
            Format::Npz => "NumPy .npz",
            Format::NpyDir => "NumPy .npy folder",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a loaded data set came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A registry data set in the data dir.
    Registry(DatasetKind),
    /// A user's path in one of the formats.
    Path { format: Format, path: PathBuf },
}

/// A data source as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSpec {
    Registry(DatasetKind),
    Path(PathBuf),
}

impl DataSpec {
    /// A registry name if `s` is one (as [`DatasetKind`] parses it), else a path.
    pub fn parse(s: &str) -> DataSpec {
        match s.parse::<DatasetKind>() {
            Ok(k) => DataSpec::Registry(k),
            Err(_) => DataSpec::Path(PathBuf::from(s)),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Registry(k) => write!(f, "{k}"),
            DataSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How a file compares with its published checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// Equal to the published sum of this algorithm.
    Match { algorithm: &'static str },
    /// Different from it: the file is not the published one (a warning, not an error).
    Mismatch {
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    /// No published sum is known for this file.
    Unknown,
}

/// One data file's SHA-256 and its comparison with a published sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChecksum {
    pub path: PathBuf,
    pub sha256: String,
    pub status: ChecksumStatus,
}

/// Everything that can steer loading; the defaults read any source as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// Where registry data sets live.
    pub data_dir: PathBuf,
    pub image: ImageFolderOptions,
    /// CIFAR-100: use the 20 coarse labels instead of the 100 fine ones.
    pub cifar100_coarse: bool,
    /// NumPy: the class count, when the labels alone (largest + 1) would undercount.
    pub num_classes: Option<usize>,
    /// Image folders: reuse `ROOT/intq-manifest.json` where files are unchanged and write the
    /// new scan there (a failed write is a warning).
    pub use_manifest: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            data_dir: crate::default_data_dir(),
            image: ImageFolderOptions::default(),
            cifar100_coarse: false,
            num_classes: None,
            use_manifest: false,
        }
    }
}

/// What loading noticed besides the data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Pictures and folders left out under `skip_bad`.
    pub skipped: Vec<Skipped>,
    /// Checksums of the data files, where the format has few enough files to list.
    pub checksums: Vec<FileChecksum>,
    /// Things a user should hear about that did not stop loading.
    pub warnings: Vec<String>,
    /// An image folder's scan.
    pub manifest: Option<Manifest>,
    /// Pictures of that scan taken from the saved manifest, unchanged on disk, not decoded to
    /// scan them.
    pub manifest_reused: usize,
    /// Where the manifest was read from or written to.
    pub manifest_file: Option<PathBuf>,
}

/// Where an image folder's manifest may be: beside the data ([`image_folder::manifest_path`]),
/// then, for a folder that cannot be written, `<data dir>/manifests/<hash of the folder's
/// absolute path>.json`.
pub fn manifest_places(root: &Path, data_dir: &Path) -> [PathBuf; 2] {
    use sha2::{Digest, Sha256};
    let abs = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let h = Sha256::digest(abs.to_string_lossy().as_bytes());
    let name: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
    [
        image_folder::manifest_path(root),
        data_dir.join("manifests").join(format!("{name}.json")),
    ]
}

/// The saved manifest of `root`, if one can be read; a broken one is a warning (and ignored).
fn read_manifest(root: &Path, data_dir: &Path, warnings: &mut Vec<String>) -> Option<Manifest> {
    let path = manifest_places(root, data_dir)
        .into_iter()
        .find(|p| p.is_file())?;
    match Manifest::load(&path) {
        Ok(m) => Some(m),
        Err(e) => {
            warnings.push(format!("{e}; scanning afresh"));
            None
        }
    }
}

/// Saves `m` beside the data, else in the data dir's cache; the error says why neither worked.
fn write_manifest(m: &Manifest, root: &Path, data_dir: &Path) -> Result<PathBuf, String> {
    let [beside, cached] = manifest_places(root, data_dir);
    let first = match m.save(&beside) {
        Ok(()) => return Ok(beside),
        Err(e) => e,
    };
    if let Some(dir) = cached.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match m.save(&cached) {
        Ok(()) => Ok(cached),
        Err(e) => Err(format!(
            "could not save the scan's manifest ({first}; {e}); the next run decodes every \
             picture again to scan it"
        )),
    }
}

/// A loaded data set and its report.
#[derive(Debug, Clone)]
pub struct Opened {
    pub dataset: Dataset,
    pub report: LoadReport,
}

/// Which format `path` holds; an error naming the path if none.
pub fn detect(path: &Path) -> Result<Format, DataError> {
    let unknown = |problem: &str| DataError::UnknownFormat {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    };
    let md = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            unknown("no such file or folder")
        } else {
            DataError::io(path, e)
        }
    })?;
    if md.is_file() {
        return if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
        {
            Ok(Format::Npz)
        } else {
            Err(unknown("a file, but not a .npz archive"))
        };
    }
    if !md.is_dir() {
        return Err(unknown("neither a file nor a folder"));
    }
    if numpy::npy_files(path)[0].is_file() {
        return Ok(Format::NpyDir);
    }
    if path.join(cifar::CIFAR10_TEST).is_file() || !cifar::cifar10_train_files(path)?.is_empty() {
        return Ok(Format::Cifar10);
    }
    if path.join(cifar::CIFAR100_TRAIN).is_file() && path.join(cifar::CIFAR100_TEST).is_file() {
        return Ok(Format::Cifar100);
    }
    if image_folder::looks_like_image_folder(path) {
        return Ok(Format::ImageFolder);
    }
    Err(unknown("a folder holding none of the expected files"))
}

fn checksum_warnings(sums: &[FileChecksum]) -> Vec<String> {
    sums.iter()
        .filter_map(|c| match &c.status {
            ChecksumStatus::Mismatch {
                algorithm,
                expected,
                actual,
            } => Some(format!(
                "{}: {algorithm} {actual} differs from the published {expected}: not the \
                 original file (fine for data of your own)",
                c.path.display()
            )),
            _ => None,
        })
        .collect()
}

/// Loads a data set from a registry name or a path.
pub fn open(spec: &DataSpec, opts: &OpenOptions) -> Result<Opened, DataError> {
    let path = match spec {
        DataSpec::Registry(kind) => {
            return Ok(Opened {
                dataset: crate::load(*kind, &opts.data_dir)?,
                report: LoadReport::default(),
            })
        }
        DataSpec::Path(p) => p,
    };
    let format = detect(path)?;
    let mut report = LoadReport::default();
    let (train, test) = match format {
        Format::Idx => unreachable!("a path is never detected as IDX"),
        Format::ImageFolder => {
            let previous = if opts.use_manifest {
                read_manifest(path, &opts.data_dir, &mut report.warnings)
            } else {
                None
            };
            let d = image_folder::load(path, &opts.image, previous.as_ref())?;
            if opts.use_manifest && previous.as_ref() != Some(&d.manifest) {
                report.manifest_file = write_manifest(&d.manifest, path, &opts.data_dir)
                    .map_err(|e| report.warnings.push(e))
                    .ok();
            } else if opts.use_manifest {
                report.manifest_file = manifest_places(path, &opts.data_dir)
                    .into_iter()
                    .find(|p| p.is_file());
            }
            report.manifest_reused = d.reused;
            report.skipped = d.manifest.skipped.clone();
            report.manifest = Some(d.manifest);
            (d.train, d.test)
        }
        Format::Cifar10 | Format::Cifar100 => {
            let kind = if format == Format::Cifar10 {
                cifar::CifarKind::Cifar10
            } else {
                cifar::CifarKind::Cifar100 {
                    coarse: opts.cifar100_coarse,
                }
            };
            let d = cifar::load(path, kind)?;
            report.warnings = checksum_warnings(&d.checksums);
            report.checksums = d.checksums;
            (d.train, d.test)
        }
        Format::Npz | Format::NpyDir => {
            let d = if format == Format::Npz {
                numpy::load_npz(path, opts.num_classes)?
            } else {
                numpy::load_npy_dir(path, opts.num_classes)?
            };
            (d.train, d.test)
        }
    };
    if test.len == 0 {
        report
            .warnings
            .push("the test (held-out) split is empty".to_string());
    }
    Ok(Opened {
        dataset: Dataset {
            origin: Origin::Path {
                format,
                path: path.clone(),
            },
            train,
            test,
        },
        report,
    })
}

/// An image folder opened for streaming: its training pictures are read on demand, its
/// held-out split is in memory.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub train: image_folder::FolderReader,
    pub test: Split,
    pub report: LoadReport,
}

impl Streamed {
    /// The class names, by label.
    pub fn class_names(&self) -> &[String] {
        &self.test.class_names
    }
}

/// Opens the image folder `path` for streaming: scans it (decoding only pictures the saved
/// manifest does not vouch for, keeping no pixels), then reads the held-out split into memory
/// and leaves the training pictures to [`image_folder::FolderReader`]. The pixels are those
/// [`open`] gives.
pub fn open_streamed(path: &Path, opts: &OpenOptions) -> Result<Streamed, DataError> {
    let mut report = LoadReport::default();
    let previous = if opts.use_manifest {
        read_manifest(path, &opts.data_dir, &mut report.warnings)
    } else {
        None
    };
    let (m, reused) = image_folder::scan_reusing(path, &opts.image, previous.as_ref())?;
    if opts.use_manifest && previous.as_ref() != Some(&m) {
        report.manifest_file = write_manifest(&m, path, &opts.data_dir)
            .map_err(|e| report.warnings.push(e))
            .ok();
    } else if opts.use_manifest {
        report.manifest_file = manifest_places(path, &opts.data_dir)
            .into_iter()
            .find(|p| p.is_file());
    }
    let train =
        image_folder::FolderReader::new(path, &m, image_folder::SplitName::Train, &opts.image)?;
    if train.is_empty() {
        return Err(image_folder::corrupt(path, "no training pictures"));
    }
    let test =
        image_folder::FolderReader::new(path, &m, image_folder::SplitName::Test, &opts.image)?
            .read_all(&m.classes)?;
    if test.len == 0 {
        report
            .warnings
            .push("the test (held-out) split is empty".to_string());
    }
    report.manifest_reused = reused;
    report.skipped = m.skipped.clone();
    report.manifest = Some(m);
    Ok(Streamed {
        train,
        test,
        report,
    })
}

/// Images of one split, in total and per class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInfo {
    pub name: &'static str,
    pub images: usize,
    pub per_class: Vec<usize>,
}

/// What `intq data info SOURCE` shows about a source.
#[derive(Debug, Clone, PartialEq)]
pub struct DataInfo {
    pub source: String,
    pub format: Format,
    pub class_names: Vec<String>,
    pub splits: Vec<SplitInfo>,
    /// Smallest and largest stored image, (height, width); the same for fixed-size formats.
    pub min_size: (usize, usize),
    pub max_size: (usize, usize),
    /// Channels as loaded (for an image folder: as it would be loaded with the given options,
    /// which is also the largest stored count but alpha).
    pub channels: usize,
    pub skipped: Vec<Skipped>,
    /// `None` where the format has no per-file checksums to report (image folders).
    pub checksums: Option<Vec<FileChecksum>>,
    pub warnings: Vec<String>,
}

fn split_info(name: &'static str, s: &Split) -> SplitInfo {
    SplitInfo {
        name,
        images: s.len,
        per_class: s.label_histogram(),
    }
}

fn sha256_file(path: &Path) -> Result<String, DataError> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| DataError::io(path, e))?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Summarises a source. An image folder is only scanned (every picture decoded once, none
/// converted); other formats are loaded.
pub fn info(spec: &DataSpec, opts: &OpenOptions) -> Result<DataInfo, DataError> {
    let source = spec.to_string();
    if let DataSpec::Path(path) = spec {
        if detect(path)? == Format::ImageFolder {
            let mut warnings = Vec::new();
            let previous = if opts.use_manifest {
                read_manifest(path, &opts.data_dir, &mut warnings)
            } else {
                None
            };
            let (m, _) = image_folder::scan_reusing(path, &opts.image, previous.as_ref())?;
            if opts.use_manifest && previous.as_ref() != Some(&m) {
                if let Err(e) = write_manifest(&m, path, &opts.data_dir) {
                    warnings.push(e);
                }
            }
            let (channels, _, _) = match image_folder::target_shape(path, &m, &opts.image) {
                Ok(t) => t,
                // Mixed sizes only matter when loading without a target size.
                Err(_) => (
                    if m.entries.iter().all(|e| e.channels <= 2) {
                        1
                    } else {
                        3
                    },
                    0,
                    0,
                ),
            };
            let [train, test] = image_folder::class_counts(&m);
            let (min_size, max_size) = image_folder::size_range(&m).expect("a scan finds pictures");
            if min_size != max_size && opts.image.size.is_none() {
                warnings.push(format!(
                    "pictures range from {}x{} to {}x{} (height x width): loading needs a target size",
                    min_size.0, min_size.1, max_size.0, max_size.1
                ));
            }
            return Ok(DataInfo {
                source,
                format: Format::ImageFolder,
                splits: vec![
                    SplitInfo {
                        name: "train",
                        images: train.iter().sum(),
                        per_class: train,
                    },
                    SplitInfo {
                        name: "test",
                        images: test.iter().sum(),
                        per_class: test,
                    },
                ],
                class_names: m.classes,
                min_size,
                max_size,
                channels,
                skipped: m.skipped,
                checksums: None,
                warnings,
            });
        }
    }
    let opened = open(spec, opts)?;
    let ds = &opened.dataset;
    let (format, checksums) = match &ds.origin {
        Origin::Registry(kind) => {
            let sums = crate::fetch::published_sha256(*kind);
            let folder = crate::dataset_dir(*kind, &opts.data_dir);
            let mut list = Vec::new();
            for (stem, expected) in crate::FILE_STEMS.iter().zip(sums) {
                let file = crate::find_file(&folder, stem);
                // The sums are of the uncompressed files, so a .gz is hashed as read.
                let (sha256, status) = if crate::idx::is_gz(&file) {
                    ("(gzipped)".to_string(), ChecksumStatus::Unknown)
                } else {
                    let actual = sha256_file(&file)?;
                    let status = if actual == expected {
                        ChecksumStatus::Match {
                            algorithm: "SHA-256",
                        }
                    } else {
                        ChecksumStatus::Mismatch {
                            algorithm: "SHA-256",
                            expected: expected.to_string(),
                            actual: actual.clone(),
                        }
                    };
                    (actual, status)
                };
                list.push(FileChecksum {
                    path: file,
                    sha256,
                    status,
                });
            }
            (Format::Idx, list)
        }
        Origin::Path { format, path } => {
            let list = match format {
                Format::Npz => vec![FileChecksum {
                    path: path.clone(),
                    sha256: sha256_file(path)?,
                    status: ChecksumStatus::Unknown,
                }],
                Format::NpyDir => numpy::npy_files(path)
                    .iter()
                    .map(|p| {
                        Ok(FileChecksum {
                            path: p.clone(),
                            sha256: sha256_file(p)?,
                            status: ChecksumStatus::Unknown,
                        })
                    })
                    .collect::<Result<_, DataError>>()?,
                _ => opened.report.checksums.clone(),
            };
            (*format, list)
        }
    };
    let size = (ds.train.rows, ds.train.cols);
    let mut warnings = opened.report.warnings.clone();
    if format == Format::Idx {
        warnings.extend(checksum_warnings(&checksums));
    }
    Ok(DataInfo {
        source,
        format,
        class_names: ds.class_names().to_vec(),
        splits: vec![split_info("train", &ds.train), split_info("test", &ds.test)],
        min_size: size,
        max_size: size,
        channels: ds.train.channels,
        skipped: opened.report.skipped,
        checksums: Some(checksums),
        warnings,
    })
}

impl fmt::Display for DataInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.source, self.format)?;
        let size = |(h, w): (usize, usize)| format!("{h}x{w}");
        if self.min_size == self.max_size {
            writeln!(
                f,
                "  images: {} (height x width), {} channel{}",
                size(self.min_size),
                self.channels,
                if self.channels == 1 { "" } else { "s" }
            )?;
        } else {
            writeln!(
                f,
                "  images: {} to {} (height x width), {} channel{} when loaded",
                size(self.min_size),
                size(self.max_size),
                self.channels,
                if self.channels == 1 { "" } else { "s" }
            )?;
        }
        writeln!(f, "  classes: {}", self.class_names.len())?;
        let name_w = self
            .class_names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 24);
        write!(f, "  {:>4}  {:<name_w$}", "label", "class")?;
        for s in &self.splits {
            write!(f, "  {:>8}", s.name)?;
        }
        writeln!(f)?;
        for (l, n) in self.class_names.iter().enumerate() {
            write!(f, "  {l:>4}  {n:<name_w$}")?;
            for s in &self.splits {
                write!(f, "  {:>8}", s.per_class.get(l).copied().unwrap_or(0))?;
            }
            writeln!(f)?;
        }
        write!(f, "  {:>4}  {:<name_w$}", "", "total")?;
        for s in &self.splits {
            write!(f, "  {:>8}", s.images)?;
        }
        writeln!(f)?;
        if !self.skipped.is_empty() {
            writeln!(f, "  skipped: {}", self.skipped.len())?;
            for s in &self.skipped {
                writeln!(f, "    {}: {}", s.path, s.problem)?;
            }
        }
        match &self.checksums {
            None => writeln!(f, "  checksums: none published for an image folder")?,
            Some(list) => {
                writeln!(
                    f,
                    "  checksums (SHA-256; status against the published sums):"
                )?;
                for c in list {
                    let status = match &c.status {
                        ChecksumStatus::Match { algorithm } => format!("{algorithm} matches"),
                        ChecksumStatus::Mismatch { algorithm, .. } => {
                            format!("{algorithm} differs (warning)")
                        }
                        ChecksumStatus::Unknown => "unknown".to_string(),
                    };
                    writeln!(f, "    {}  {}  {status}", c.sha256, c.path.display())?;
                }
            }
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}
