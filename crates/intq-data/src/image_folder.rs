//! Image folders: one folder per class of PNG, JPEG or BMP pictures, as torchvision's
//! `ImageFolder` reads them.
//!
//! Layouts, tried in this order:
//! - `ROOT/train/<class>/…` with `ROOT/val/<class>/…` (or, if there is no `val/`,
//!   `ROOT/test/<class>/…`) as the held-out split; without either, the held-out split is drawn
//!   from `train/` as in the flat layout;
//! - flat `ROOT/<class>/…`, split by a seeded `val_split` fraction.
//!
//! Pictures may sit at any depth below their class folder; other files, and names starting with
//! a dot, are ignored. Classes are the class folders of `train/` (or of `ROOT`), sorted by name:
//! the sorted position is the label, torchvision's convention. A held-out class that training
//! lacks is an error.
//!
//! The held-out part of a class in the flat layout is the `round(val_split × n)` pictures (at
//! most n − 1) whose SHA-256 of (seed as 8 little-endian bytes, relative path) is smallest, so
//! the split depends only on the seed and the names, and adding a picture moves no other.
//!
//! [`scan`] decodes every picture once, recording (path, byte size, mtime, width, height,
//! channels) in a [`Manifest`]; a saved manifest given back to it skips decoding the files
//! whose size and mtime are unchanged. [`load`] scans, then decodes and converts each picture to
//! the target: uint8 HWC, grey (1 channel) or RGB (3). Grey becomes RGB by replication; colour
//! becomes grey by the ITU-R 601-2 luma weights in PIL's fixed point,
//! `(19595 R + 38470 G + 7471 B + 32768) >> 16`, what `Image.convert("L")` computes; alpha is
//! dropped. Pictures whose size differs from the target are resized with the `image` crate's
//! `Triangle` (bilinear) filter, by the rule [`Resize`] picks. Without an explicit target the
//! channels are 1 if every picture is grey and 3 otherwise, and all pictures must share one size.

use crate::{DataError, Split};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageReader, Luma, Pixel, Rgb};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// File extensions read as pictures (compared without regard to case).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];
/// Where a manifest is kept beside the data: `ROOT/intq-manifest.json`.
pub const MANIFEST_FILE: &str = "intq-manifest.json";
/// The manifest format this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Most classes a label fits (labels are bytes).
pub const MAX_CLASSES: usize = 256;

const HINT: &str = "an image folder is ROOT/train/<class>/*.png|jpg|jpeg|bmp with ROOT/val/<class>/… \
                    or ROOT/test/<class>/…, or ROOT/<class>/…; pass skip_bad to leave bad pictures out";

/// How a picture of another size is brought to the target height × width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Resize straight to height × width, changing the aspect ratio if it differs.
    #[default]
    Stretch,
    /// Scale so the picture covers height × width keeping its aspect ratio (the shorter side,
    /// for a square target), then cut the centre out: torchvision's `Resize` + `CenterCrop`.
    ShorterSideCrop,
}

/// How to read an image folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolderOptions {
    /// Target (height, width); `None` keeps the pictures' own size, which must then be shared.
    pub size: Option<(usize, usize)>,
    /// Target channels, 1 or 3; `None`: 1 if every picture is grey, else 3.
    pub channels: Option<usize>,
    pub resize: Resize,
    /// Fraction of each class held out when the folder has no `val/` or `test/`, in [0, 1).
    pub val_split: f64,
    /// Seed of that held-out draw.
    pub seed: u64,
    /// Leave out unreadable or undecodable pictures, empty class folders and held-out classes
    /// unknown to training, listing them, instead of failing on the first.
    pub skip_bad: bool,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        ImageFolderOptions {
            size: None,
            channels: None,
            resize: Resize::Stretch,
            val_split: 0.1,
            seed: 0,
            skip_bad: false,
        }
    }
}

/// Which split a picture belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitName {
    Train,
    Test,
}

/// Which layout the folder has, so which folder the held-out split came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// `train/` and `val/`.
    TrainVal,
    /// `train/` and `test/`.
    TrainTest,
    /// `train/` only: the held-out split is drawn from it.
    TrainOnly,
    /// Class folders directly under the root, split by fraction.
    Flat,
}

/// One picture as scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the root, with `/` separators.
    pub path: String,
    pub split: SplitName,
    pub label: u8,
    /// File size in bytes and modification time (ns since the Unix epoch; 0 if unknown): a
    /// saved entry is reused while both are unchanged.
    pub bytes: u64,
    pub mtime_ns: u64,
    pub width: u32,
    pub height: u32,
    /// Channels as stored: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
}

/// Something left out under `skip_bad`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Path relative to the root, with `/` separators.
    pub path: String,
    pub problem: String,
}

/// What a scan found: the classes, every good picture, and what was left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub layout: Layout,
    pub classes: Vec<String>,
    pub entries: Vec<ManifestEntry>,
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Pictures of one split.
    pub fn split(&self, s: SplitName) -> impl Iterator<Item = &ManifestEntry> {
        self.entries.iter().filter(move |e| e.split == s)
    }

    /// Writes the manifest as JSON, atomically (a temporary file in the same folder, renamed).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let json = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| DataError::io(dir, e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.flush())
            .map_err(|e| DataError::io(tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| DataError::io(path, e.error))?;
        Ok(())
    }

    /// Reads a manifest written by [`Manifest::save`].
    pub fn load(path: &Path) -> Result<Manifest, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let bad = |problem: String| DataError::Corrupt {
            path: path.to_path_buf(),
            problem,
            hint: "delete the manifest to have the folder scanned afresh".into(),
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a manifest: {e}")))?;
        if m.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {} (this reader knows {MANIFEST_VERSION})",
                m.version
            )));
        }
        Ok(m)
    }
}

/// The manifest's place beside the data.
pub fn manifest_path(root: &Path) -> PathBuf {
    root.join(MANIFEST_FILE)
}

/// The folder read: both splits, the scan they came from, and the target they were made to.
#[derive(Debug, Clone)]
pub struct ImageFolderData {
    pub train: Split,
    pub test: Split,
    pub manifest: Manifest,
    /// Pictures whose scan entry came from the previous manifest, unchanged on disk.
    pub reused: usize,
}

pub(crate) fn corrupt(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
        hint: HINT.to_string(),
    }
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Visible subfolders of `dir`, sorted by name.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        if hidden(&entry.file_name()) || !path.is_dir() {
            continue;
        }
        out.push((entry.file_name().to_string_lossy().into_owned(), path));
    }
    out.sort();
    Ok(out)
}

/// True when a file name has a picture extension.
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Picture files at any depth below `dir`, sorted by path. Symbolic links are followed; one
/// whose target is missing is still listed, so that reading it reports the problem.
fn pictures_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| DataError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            pictures_under(&path, out)?;
        } else if is_image_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// True when `dir` holds a picture at most `depth` folders down (a cheap look for detection).
pub(crate) fn has_picture_within(dir: &Path, depth: usize) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    for entry in rd.flatten() {
        if hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth > 0 && has_picture_within(&path, depth - 1) {
                return true;
            }
        } else if is_image_name(&path) {
            return true;
        }
    }
    false
}

/// True when `root` looks like an image folder: a `train/` of class folders, or class folders
/// holding pictures.
pub fn looks_like_image_folder(root: &Path) -> bool {
    let train = root.join("train");
    if train.is_dir() {
        return has_picture_within(&train, 3);
    }
    has_picture_within(root, 3)
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A picture found before decoding.
struct Found {
    rel: String,
    abs: PathBuf,
    split: SplitName,
    label: u8,
}

/// Marks the held-out part of one class's pictures (see the module docs).
fn draw_held_out(found: &mut [Found], fraction: f64, seed: u64) {
    let n = found.len();
    let n_val = ((fraction * n as f64).round() as usize).min(n.saturating_sub(1));
    let key = |f: &Found| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(f.rel.as_bytes());
        let d = h.finalize();
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    };
    let mut order: Vec<(u64, usize)> = found.iter().enumerate().map(|(i, f)| (key(f), i)).collect();
    order.sort();
    for &(_, i) in &order[..n_val] {
        found[i].split = SplitName::Test;
    }
}

fn label_of(i: usize, root: &Path) -> Result<u8, DataError> {
    u8::try_from(i).map_err(|_| {
        corrupt(
            root,
            format!("more than {MAX_CLASSES} class folders; at most {MAX_CLASSES} classes are supported"),
        )
    })
}

/// Finds the layout, the classes and every picture file, without reading any.
fn discover(
    root: &Path,
    opts: &ImageFolderOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<(Layout, Vec<String>, Vec<Found>), DataError> {
    if !(0.0..1.0).contains(&opts.val_split) {
        return Err(DataError::InvalidOption(format!(
            "val_split {} is not in [0, 1)",
            opts.val_split
        )));
    }
    if !root.is_dir() {
        return Err(DataError::Missing {
            path: root.to_path_buf(),
            hint: HINT.into(),
        });
    }
    let train_dir = root.join("train");
    let (layout, class_root, held_dir) = if train_dir.is_dir() {
        let (val, test) = (root.join("val"), root.join("test"));
        if val.is_dir() {
            (Layout::TrainVal, train_dir, Some(val))
        } else if test.is_dir() {
            (Layout::TrainTest, train_dir, Some(test))
        } else {
            (Layout::TrainOnly, train_dir, None)
        }
    } else {
        (Layout::Flat, root.to_path_buf(), None)
    };
    let class_dirs = subdirs(&class_root)?;
    if class_dirs.is_empty() {
        return Err(corrupt(&class_root, "no class folders"));
    }
    let classes: Vec<String> = class_dirs.iter().map(|(n, _)| n.clone()).collect();
    let mut found = Vec::new();
    let mut skip_or_fail = |path: &Path, problem: String| -> Result<(), DataError> {
        if opts.skip_bad {
            skipped.push(Skipped {
                path: relative(root, path),
                problem,
            });
            Ok(())
        } else {
            Err(corrupt(path, problem))
        }
    };
    for (i, (_, dir)) in class_dirs.iter().enumerate() {
        let label = label_of(i, root)?;
        let mut files = Vec::new();
        pictures_under(dir, &mut files)?;
        if files.is_empty() {
            skip_or_fail(
                dir,
                "class folder has no pictures (.png, .jpg, .jpeg, .bmp)".into(),
            )?;
        }
        let mut class: Vec<Found> = files
            .into_iter()
            .map(|abs| Found {
                rel: relative(root, &abs),
                abs,
                split: SplitName::Train,
                label,
            })
            .collect();
        if held_dir.is_none() {
            draw_held_out(&mut class, opts.val_split, opts.seed);
        }
        found.extend(class);
    }
    if let Some(held) = &held_dir {
        for (name, dir) in subdirs(held)? {
            let Some(i) = classes.iter().position(|c| *c == name) else {
                skip_or_fail(
                    &dir,
                    format!("class {name:?} is not among the training classes {classes:?}"),
                )?;
                continue;
            };
            let label = label_of(i, root)?;
            let mut files = Vec::new();
            pictures_under(&dir, &mut files)?;
            found.extend(files.into_iter().map(|abs| Found {
                rel: relative(root, &abs),
                abs,
                split: SplitName::Test,
                label,
            }));
        }
    }
    if found.is_empty() {
        return Err(corrupt(
            root,
            "no pictures (.png, .jpg, .jpeg, .bmp) in any class folder",
        ));
    }
    Ok((layout, classes, found))
}

/// Decodes a picture held in memory, recognising the format by its content.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, String> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| format!("cannot decode the picture: {e}"))
}

fn read_and_decode(path: &Path) -> Result<DynamicImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    decode(&bytes)
}

/// Runs `f` on every item on all cores, keeping the order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(|| c.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a decoding thread panicked"))
            .collect()
    })
}

fn file_stamp(path: &Path) -> Result<(u64, u64), String> {
    let md = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
    Ok((md.len(), mtime))
}

/// Lists and decodes every picture once (reusing `previous` entries whose file size and mtime
/// are unchanged), returning the manifest. Bad pictures fail the scan, naming the file, unless
/// `opts.skip_bad`; zero good pictures always fail.
pub fn scan(
    root: &Path,
    opts: &ImageFolderOptions,
    previous: Option<&Manifest>,
) -> Result<Manifest, DataError> {
    scan_reusing(root, opts, previous).map(|(m, _)| m)
}

/// [`scan`], also saying how many entries came from `previous` without decoding.
pub fn scan_reusing(
    root: &Path,
    opts: &ImageFolderOptions,
    previous: Option<&Manifest>,
) -> Result<(Manifest, usize), DataError> {
    let (m, _) = scan_converting(root, opts, previous, None)?;
    let reused = reuse_count(&m, previous);
    Ok((m, reused))
}

/// Pixels converted during a scan, by manifest entry; `None` where not converted yet.
type Converted = Vec<Option<Vec<u8>>>;

/// [`scan`], also converting each picture it decodes to `target` (channels, height, width) so
/// that a load with a known target decodes every new picture only once. The pixels come in the
/// order of the manifest's entries; `None` for entries reused from `previous`.
fn scan_converting(
    root: &Path,
    opts: &ImageFolderOptions,
    previous: Option<&Manifest>,
    target: Option<(usize, usize, usize)>,
) -> Result<(Manifest, Converted), DataError> {
    let mut skipped = Vec::new();
    let (layout, classes, found) = discover(root, opts, &mut skipped)?;
    let known: HashMap<&str, &ManifestEntry> = previous
        .filter(|m| m.version == MANIFEST_VERSION)
        .map(|m| m.entries.iter().map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    type Scanned = Result<(ManifestEntry, Option<Vec<u8>>), String>;
    let results = par_map(&found, |f| -> Scanned {
        let (bytes, mtime_ns) = file_stamp(&f.abs)?;
        if let Some(old) = known.get(f.rel.as_str()) {
            if old.bytes == bytes && old.mtime_ns == mtime_ns && mtime_ns != 0 {
                let e = ManifestEntry {
                    split: f.split,
                    label: f.label,
                    ..(*old).clone()
                };
                return Ok((e, None));
            }
        }
        let img = read_and_decode(&f.abs)?;
        let pixels = target.map(|(c, h, w)| to_pixels(&img, c, h, w, opts.resize));
        let e = ManifestEntry {
            path: f.rel.clone(),
            split: f.split,
            label: f.label,
            bytes,
            mtime_ns,
            width: img.width(),
            height: img.height(),
            channels: img.color().channel_count(),
        };
        Ok((e, pixels))
    });
    let mut entries = Vec::with_capacity(found.len());
    let mut pixels = Vec::with_capacity(found.len());
    for (f, r) in found.iter().zip(results) {
        match r {
            Ok((e, p)) => {
                entries.push(e);
                pixels.push(p);
            }
            Err(problem) if opts.skip_bad => skipped.push(Skipped {
                path: f.rel.clone(),
                problem,
            }),
            Err(problem) => return Err(corrupt(&f.abs, problem)),
        }
    }
    if entries.is_empty() {
        return Err(corrupt(
            root,
            format!("none of the {} pictures could be read", found.len()),
        ));
    }
    let m = Manifest {
        version: MANIFEST_VERSION,
        layout,
        classes,
        entries,
        skipped,
    };
    Ok((m, pixels))
}

/// The channels and (height, width) the pictures of `m` will be made into under `opts`.
pub fn target_shape(
    root: &Path,
    m: &Manifest,
    opts: &ImageFolderOptions,
) -> Result<(usize, usize, usize), DataError> {
    let channels = match opts.channels {
        Some(c) => c,
        None if m.entries.iter().all(|e| e.channels <= 2) => 1,
        None => 3,
    };
    let (h, w) = match opts.size {
        Some(s) => s,
        None => {
            let first = &m.entries[0];
            if let Some(e) = m
                .entries
                .iter()
                .find(|e| (e.width, e.height) != (first.width, first.height))
            {
                return Err(corrupt(
                    root,
                    format!(
                        "pictures differ in size ({} is {}x{}, {} is {}x{} as width x height); \
                         give a target size to resize them to",
                        first.path, first.width, first.height, e.path, e.width, e.height
                    ),
                ));
            }
            (first.height as usize, first.width as usize)
        }
    };
    check_target(channels, h, w)?;
    Ok((channels, h, w))
}

fn check_target(channels: usize, h: usize, w: usize) -> Result<(), DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::InvalidOption(format!(
            "{channels} channels; 1 (grey) or 3 (RGB) are supported"
        )));
    }
    if h == 0 || w == 0 || h > 1 << 15 || w > 1 << 15 {
        return Err(DataError::InvalidOption(format!(
            "image size {h}x{w}; each side must be 1 to 32768"
        )));
    }
    Ok(())
}

/// Grey by the ITU-R 601-2 luma weights, in PIL's fixed point.
fn luma601(rgb: &ImageBuffer<Rgb<u8>, Vec<u8>>) -> ImageBuffer<Luma<u8>, Vec<u8>> {
    ImageBuffer::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        Luma([((19595 * r + 38470 * g + 7471 * b + 32768) >> 16) as u8])
    })
}

fn fit<P: Pixel<Subpixel = u8> + 'static>(
    img: ImageBuffer<P, Vec<u8>>,
    h: usize,
    w: usize,
    rule: Resize,
) -> Vec<u8> {
    let (tw, th) = (w as u32, h as u32);
    let (w0, h0) = img.dimensions();
    if (w0, h0) == (tw, th) {
        return img.into_raw();
    }
    match rule {
        Resize::Stretch => image::imageops::resize(&img, tw, th, FilterType::Triangle).into_raw(),
        Resize::ShorterSideCrop => {
            let s = (tw as f64 / w0 as f64).max(th as f64 / h0 as f64);
            let nw = ((w0 as f64 * s).round() as u32).max(tw);
            let nh = ((h0 as f64 * s).round() as u32).max(th);
            let big = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
            image::imageops::crop_imm(&big, (nw - tw) / 2, (nh - th) / 2, tw, th)
                .to_image()
                .into_raw()
        }
    }
}

/// Converts one decoded picture to `channels` (1 or 3) uint8 HWC pixels of `height` × `width`
/// (see the module docs for the rules).
pub fn to_pixels(
    img: &DynamicImage,
    channels: usize,
    height: usize,
    width: usize,
    rule: Resize,
) -> Vec<u8> {
    if channels == 1 {
        let grey = if img.color().has_color() {
            luma601(&img.to_rgb8())
        } else {
            img.to_luma8()
        };
        fit(grey, height, width, rule)
    } else {
        fit(img.to_rgb8(), height, width, rule)
    }
}

/// Scans (reusing `previous` where files are unchanged) and converts every picture to the
/// target shape. With both `size` and `channels` given each new picture is decoded once; without,
/// the target depends on the whole scan and pictures are decoded a second time to convert. Returns both splits and the manifest, which a caller may save with
/// [`Manifest::save`] at [`manifest_path`] for the next run.
pub fn load(
    root: &Path,
    opts: &ImageFolderOptions,
    previous: Option<&Manifest>,
) -> Result<ImageFolderData, DataError> {
    // With the target known up front the scan converts as it decodes; otherwise the target
    // depends on every picture's size and channels, so pictures are decoded again to convert.
    let known_target = match (opts.channels, opts.size) {
        (Some(c), Some((h, w))) => Some((c, h, w)),
        _ => None,
    };
    if let Some((c, h, w)) = known_target {
        check_target(c, h, w)?;
    }
    let (mut manifest, mut converted) = scan_converting(root, opts, previous, known_target)?;
    let reused = reuse_count(&manifest, previous);
    let (c, h, w) = target_shape(root, &manifest, opts)?;
    let todo: Vec<usize> = (0..converted.len())
        .filter(|&i| converted[i].is_none())
        .collect();
    let decoded = par_map(&todo, |&i| {
        read_and_decode(&root.join(&manifest.entries[i].path))
            .map(|img| to_pixels(&img, c, h, w, opts.resize))
    });
    let mut failed = HashMap::new();
    for (i, r) in todo.into_iter().zip(decoded) {
        match r {
            Ok(p) => converted[i] = Some(p),
            Err(problem) => {
                failed.insert(i, problem);
            }
        }
    }
    let pixels = converted
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.ok_or_else(|| failed.remove(&i).unwrap_or_default()));
    let names = manifest.classes.clone();
    let empty = || Split {
        images: Vec::new(),
        labels: Vec::new(),
        len: 0,
        rows: h,
        cols: w,
        channels: c,
        class_names: names.clone(),
    };
    let (mut train, mut test) = (empty(), empty());
    let mut kept = Vec::with_capacity(manifest.entries.len());
    for (e, p) in manifest.entries.iter().zip(pixels) {
        let p = match p {
            Ok(p) => p,
            // The file changed between the scan and now.
            Err(problem) if opts.skip_bad => {
                manifest.skipped.push(Skipped {
                    path: e.path.clone(),
                    problem,
                });
                continue;
            }
            Err(problem) => return Err(corrupt(&root.join(&e.path), problem)),
        };
        let s = match e.split {
            SplitName::Train => &mut train,
            SplitName::Test => &mut test,
        };
        s.images.extend_from_slice(&p);
        s.labels.push(e.label);
        s.len += 1;
        kept.push(e.clone());
    }
    manifest.entries = kept;
    if train.len == 0 {
        return Err(corrupt(root, "no training pictures"));
    }
    Ok(ImageFolderData {
        train,
        test,
        manifest,
        reused,
    })
}

/// Entries of `m` taken over from `previous` (same path, size and mtime).
fn reuse_count(m: &Manifest, previous: Option<&Manifest>) -> usize {
    let Some(p) = previous else { return 0 };
    let known: HashMap<&str, &ManifestEntry> =
        p.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    m.entries
        .iter()
        .filter(|e| {
            known
                .get(e.path.as_str())
                .is_some_and(|o| o.bytes == e.bytes && o.mtime_ns == e.mtime_ns && e.mtime_ns != 0)
        })
        .count()
}

/// How many training pictures `root` holds under `opts`, found by listing the folders without
/// reading any picture (so before a scan decides which are good).
pub fn count_training_pictures(root: &Path, opts: &ImageFolderOptions) -> Result<usize, DataError> {
    let mut skipped = Vec::new();
    let (_, _, found) = discover(root, opts, &mut skipped)?;
    Ok(found.iter().filter(|f| f.split == SplitName::Train).count())
}

/// The pictures of one split of a scanned folder, decoded and converted to the target on
/// demand (for data sets larger than memory): picture `i` is the split's `i`-th manifest entry,
/// the order [`load`] puts them in, and its pixels are exactly [`load`]'s.
#[derive(Debug, Clone)]
pub struct FolderReader {
    root: PathBuf,
    paths: Vec<String>,
    labels: Vec<u8>,
    channels: usize,
    height: usize,
    width: usize,
    resize: Resize,
}

impl FolderReader {
    /// A reader of split `split` of `m` (scanned from `root`), converting to the target `opts`
    /// gives (as [`target_shape`]).
    pub fn new(
        root: &Path,
        m: &Manifest,
        split: SplitName,
        opts: &ImageFolderOptions,
    ) -> Result<Self, DataError> {
        let (channels, height, width) = target_shape(root, m, opts)?;
        let (paths, labels) = m.split(split).map(|e| (e.path.clone(), e.label)).unzip();
        Ok(FolderReader {
            root: root.to_path_buf(),
            paths,
            labels,
            channels,
            height,
            width,
            resize: opts.resize,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The label of each picture.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// (channels, height, width) of the pixels read.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Keeps the first `n` pictures only.
    pub fn truncate(&mut self, n: usize) {
        self.paths.truncate(n);
        self.labels.truncate(n);
    }

    /// The HWC pixels of picture `i`; the error names the file.
    pub fn read(&self, i: usize) -> Result<Vec<u8>, DataError> {
        let path = self.root.join(&self.paths[i]);
        let img = read_and_decode(&path).map_err(|p| corrupt(&path, p))?;
        Ok(to_pixels(
            &img,
            self.channels,
            self.height,
            self.width,
            self.resize,
        ))
    }

    /// The HWC pixels of pictures `idx`, decoded on all cores, appended in order to `out`.
    pub fn read_many(&self, idx: &[usize], out: &mut Vec<u8>) -> Result<(), DataError> {
        for px in par_map(idx, |&i| self.read(i)) {
            out.extend_from_slice(&px?);
        }
        Ok(())
    }

    /// Every picture read into a split named by `class_names`.
    pub fn read_all(&self, class_names: &[String]) -> Result<Split, DataError> {
        let all: Vec<usize> = (0..self.len()).collect();
        let mut images = Vec::with_capacity(self.len() * self.channels * self.height * self.width);
        self.read_many(&all, &mut images)?;
        Ok(Split {
            images,
            labels: self.labels.clone(),
            len: self.len(),
            rows: self.height,
            cols: self.width,
            channels: self.channels,
            class_names: class_names.to_vec(),
        })
    }
}

/// Per split and class, how many pictures a manifest lists: `[train, test]` each a count per
/// class.
pub fn class_counts(m: &Manifest) -> [Vec<usize>; 2] {
    let mut counts = [vec![0; m.classes.len()], vec![0; m.classes.len()]];
    for e in &m.entries {
        let s = match e.split {
            SplitName::Train => 0,
            SplitName::Test => 1,
        };
        counts[s][e.label as usize] += 1;
    }
    counts
}

/// The smallest and largest stored picture sizes, as (height, width) by pixel count.
pub fn size_range(m: &Manifest) -> Option<((usize, usize), (usize, usize))> {
    let sizes: BTreeMap<(u64, u32, u32), ()> = m
        .entries
        .iter()
        .map(|e| ((e.width as u64 * e.height as u64, e.height, e.width), ()))
        .collect();
    let lo = sizes.keys().next()?;
    let hi = sizes.keys().next_back()?;
    Some((
        (lo.1 as usize, lo.2 as usize),
        (hi.1 as usize, hi.2 as usize),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_uses_the_601_weights_and_rgb_replicates_grey() {
        let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([255, 0, 0])
            } else {
                Rgb([10, 200, 30])
            }
        }));
        // PIL: L = R*299/1000 + G*587/1000 + B*114/1000 (fixed point, rounded).
        assert_eq!(to_pixels(&rgb, 1, 1, 2, Resize::Stretch), vec![76, 124]);
        let grey = DynamicImage::ImageLuma8(ImageBuffer::from_raw(2, 1, vec![3, 250]).unwrap());
        assert_eq!(
            to_pixels(&grey, 3, 1, 2, Resize::Stretch),
            vec![3, 3, 3, 250, 250, 250]
        );
        let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_raw(1, 1, vec![1, 2, 3, 0]).unwrap());
        assert_eq!(to_pixels(&rgba, 3, 1, 1, Resize::Stretch), vec![1, 2, 3]);
    }

    #[test]
    fn resize_rules_give_the_target_shape() {
        // A 4 wide x 2 high picture: left half 0, right half 200.
        let img = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 2, |x, _| {
            Luma([if x < 2 { 0 } else { 200 }])
        }));
        let s = to_pixels(&img, 1, 2, 2, Resize::Stretch);
        assert_eq!(s.len(), 4);
        assert!(s[0] < 100 && s[1] > 100, "{s:?}");
        // Covering 2x2 keeps the 4x2 picture at its scale and cuts out the middle two columns.
        let c = to_pixels(&img, 1, 2, 2, Resize::ShorterSideCrop);
        assert_eq!(c, vec![0, 200, 0, 200]);
        let up = to_pixels(&img, 3, 8, 8, Resize::ShorterSideCrop);
        assert_eq!(up.len(), 8 * 8 * 3);
    }

    #[test]
    fn held_out_draw_is_seeded_and_stable() {
        let mk = |n: usize| -> Vec<Found> {
            (0..n)
                .map(|i| Found {
                    rel: format!("c/{i}.png"),
                    abs: PathBuf::new(),
                    split: SplitName::Train,
                    label: 0,
                })
                .collect()
        };
        let held = |f: &[Found]| -> Vec<String> {
            f.iter()
                .filter(|f| f.split == SplitName::Test)
                .map(|f| f.rel.clone())
                .collect()
        };
        let mut a = mk(20);
        draw_held_out(&mut a, 0.25, 7);
        assert_eq!(held(&a).len(), 5);
        let mut b = mk(20);
        draw_held_out(&mut b, 0.25, 7);
        assert_eq!(held(&a), held(&b));
        let mut c = mk(20);
        draw_held_out(&mut c, 0.25, 8);
        assert_ne!(held(&a), held(&c));
        // One picture stays in training however large the fraction.
        let mut one = mk(1);
        draw_held_out(&mut one, 0.9, 0);
        assert!(held(&one).is_empty());
    }
}
