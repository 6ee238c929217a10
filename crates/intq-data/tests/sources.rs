//! A user's own data: format detection, and the image-folder, CIFAR-binary and NumPy loaders on
//! small data sets written here, including the same pictures in every format giving the same
//! pixels and labels.

use image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use intq_data::image_folder::{self, ImageFolderOptions, Manifest, Resize};
use intq_data::{
    cifar, detect, info, numpy, open, ChecksumStatus, DataError, DataSpec, DatasetKind, Format,
    OpenOptions, Origin, Split,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const SIDE: u32 = 32;

/// 200 "digit-like" 32x32 pictures, 20 per class, sorted by label (the order an image folder
/// lists them in): 16 per class for training, 4 for testing.
struct Synth {
    /// (label, RGB pixels HWC) for train and test.
    train: Vec<(u8, Vec<u8>)>,
    test: Vec<(u8, Vec<u8>)>,
}

fn pixel(label: u8, i: usize, x: u32, y: u32, c: u32) -> u8 {
    let l = label as u32;
    let stroke = (x * (l + 1) + y * (i as u32 % 5 + 1)) % 13 < 4;
    let base = if stroke {
        200 + (i as u32 * 7 + c * 11) % 56
    } else {
        (x + y + c * 3 + l) % 40
    };
    base as u8
}

fn synth(grey: bool) -> Synth {
    let mut s = Synth {
        train: Vec::new(),
        test: Vec::new(),
    };
    for label in 0..10u8 {
        for i in 0..20 {
            let mut px = Vec::with_capacity((SIDE * SIDE * 3) as usize);
            for y in 0..SIDE {
                for x in 0..SIDE {
                    for c in 0..3 {
                        px.push(pixel(label, i, x, y, if grey { 0 } else { c }));
                    }
                }
            }
            if i < 16 {
                s.train.push((label, px));
            } else {
                s.test.push((label, px));
            }
        }
    }
    s
}

fn grey_of(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).map(|p| p[0]).collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn save(img: &DynamicImage, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// `ROOT/{train,test}/<label>/<n>.png`, grey or RGB PNGs.
fn write_png_folder(root: &Path, s: &Synth, grey: bool) {
    for (split, items) in [("train", &s.train), ("test", &s.test)] {
        for (n, (label, px)) in items.iter().enumerate() {
            let img = if grey {
                DynamicImage::ImageLuma8(GrayImage::from_raw(SIDE, SIDE, grey_of(px)).unwrap())
            } else {
                DynamicImage::ImageRgb8(RgbImage::from_raw(SIDE, SIDE, px.clone()).unwrap())
            };
            save(&img, &root.join(format!("{split}/{label}/{n:03}.png")));
        }
    }
}

fn cifar10_bytes(items: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (label, px) in items {
        out.push(*label);
        for c in 0..3 {
            out.extend(px.chunks_exact(3).map(|p| p[c]));
        }
    }
    out
}

fn npz(arrays: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in arrays {
        w.start_file(
            format!("{name}.npy"),
            SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// The four Keras arrays: images (N, 32, 32) if grey else (N, 32, 32, 3), labels int64 (N, 1).
fn keras_arrays(s: &Synth, grey: bool) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (x, y, items) in [
        ("x_train", "y_train", &s.train),
        ("x_test", "y_test", &s.test),
    ] {
        let n = items.len();
        let (shape, px): (Vec<usize>, Vec<u8>) = if grey {
            (
                vec![n, 32, 32],
                items.iter().flat_map(|(_, p)| grey_of(p)).collect(),
            )
        } else {
            (
                vec![n, 32, 32, 3],
                items.iter().flat_map(|(_, p)| p.clone()).collect(),
            )
        };
        let labels: Vec<u8> = items
            .iter()
            .flat_map(|(l, _)| (*l as i64).to_le_bytes())
            .collect();
        out.push((x, numpy::npy_bytes("|u1", &shape, &px)));
        out.push((y, numpy::npy_bytes("<i8", &[n, 1], &labels)));
    }
    out
}

fn opts() -> OpenOptions {
    OpenOptions {
        data_dir: PathBuf::from("/nonexistent"),
        ..OpenOptions::default()
    }
}

fn load(path: &Path, o: &OpenOptions) -> intq_data::Opened {
    open(&DataSpec::Path(path.to_path_buf()), o).unwrap_or_else(|e| panic!("{e}"))
}

fn expect_split(s: &Split, items: &[(u8, Vec<u8>)], grey: bool) {
    let px: Vec<u8> = items
        .iter()
        .flat_map(|(_, p)| if grey { grey_of(p) } else { p.clone() })
        .collect();
    let labels: Vec<u8> = items.iter().map(|(l, _)| *l).collect();
    assert_eq!((s.len, s.rows, s.cols), (items.len(), 32, 32));
    assert_eq!(s.channels, if grey { 1 } else { 3 });
    assert_eq!(s.labels, labels);
    assert!(s.images == px, "pixels differ");
    assert_eq!(
        s.class_names,
        (0..10).map(|l| l.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn every_format_yields_the_same_pixels_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    for grey in [true, false] {
        let s = synth(grey);
        let base = dir.path().join(if grey { "grey" } else { "rgb" });
        let folder = base.join("pictures");
        write_png_folder(&folder, &s, grey);
        let cifar_dir = base.join("cifar");
        write(
            &cifar_dir.join("data_batch_1.bin"),
            &cifar10_bytes(&s.train[..100]),
        );
        write(
            &cifar_dir.join("data_batch_2.bin"),
            &cifar10_bytes(&s.train[100..]),
        );
        write(&cifar_dir.join("test_batch.bin"), &cifar10_bytes(&s.test));
        let arrays = keras_arrays(&s, grey);
        let stored = base.join("stored.npz");
        let deflated = base.join("deflated.npz");
        write(&stored, &npz(&arrays, CompressionMethod::Stored));
        write(&deflated, &npz(&arrays, CompressionMethod::Deflated));
        let npy_dir = base.join("npy");
        for (name, bytes) in &arrays {
            write(&npy_dir.join(format!("{name}.npy")), bytes);
        }

        let cases = [
            (&folder, Format::ImageFolder),
            (&stored, Format::Npz),
            (&deflated, Format::Npz),
            (&npy_dir, Format::NpyDir),
        ];
        for (path, format) in cases {
            assert_eq!(detect(path).unwrap(), format, "{}", path.display());
            let o = load(path, &opts());
            assert_eq!(
                o.dataset.origin,
                Origin::Path {
                    format,
                    path: path.clone()
                }
            );
            expect_split(&o.dataset.train, &s.train, grey);
            expect_split(&o.dataset.test, &s.test, grey);
        }
        // CIFAR is RGB whatever the pictures were: grey comes back replicated, which is also what
        // an image folder gives when asked for three channels.
        assert_eq!(detect(&cifar_dir).unwrap(), Format::Cifar10);
        let c = load(&cifar_dir, &opts());
        expect_split(&c.dataset.train, &s.train, false);
        expect_split(&c.dataset.test, &s.test, false);
        let mut rgb = opts();
        rgb.image.channels = Some(3);
        let f = load(&folder, &rgb);
        assert_eq!(f.dataset.train, c.dataset.train);
        assert_eq!(f.dataset.test, c.dataset.test);
        // Made-up files are not the published CIFAR-10: a warning per file, no error.
        assert_eq!(c.report.warnings.len(), 3, "{:?}", c.report.warnings);
        assert!(c
            .report
            .checksums
            .iter()
            .all(|k| matches!(k.status, ChecksumStatus::Mismatch { .. })));
    }
}

fn grey_png(v: u8, w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageLuma8(ImageBuffer::from_pixel(w, h, Luma([v])))
}

/// A flat folder of 3 classes x 10 pictures.
fn flat_folder(root: &Path) {
    for class in ["cat", "ant", "bee"] {
        for i in 0..10 {
            save(
                &grey_png(i as u8, 4, 4),
                &root.join(format!("{class}/{i}.png")),
            );
        }
    }
}

#[test]
fn flat_folder_is_split_by_seeded_fraction_with_sorted_class_ids() {
    let dir = tempfile::tempdir().unwrap();
    flat_folder(dir.path());
    let mut o = ImageFolderOptions {
        val_split: 0.2,
        seed: 5,
        ..ImageFolderOptions::default()
    };
    let d = image_folder::load(dir.path(), &o, None).unwrap();
    assert_eq!(d.manifest.layout, image_folder::Layout::Flat);
    assert_eq!(d.train.class_names, ["ant", "bee", "cat"]);
    assert_eq!((d.train.len, d.test.len), (24, 6));
    assert_eq!(d.test.label_histogram(), vec![2, 2, 2]);
    let again = image_folder::load(dir.path(), &o, None).unwrap();
    assert_eq!(again.test, d.test);
    assert_eq!(again.manifest, d.manifest);
    o.seed = 6;
    let other = image_folder::load(dir.path(), &o, None).unwrap();
    let held = |m: &Manifest| -> Vec<String> {
        m.split(image_folder::SplitName::Test)
            .map(|e| e.path.clone())
            .collect()
    };
    assert_ne!(held(&other.manifest), held(&d.manifest));
    // No val/ or test/ under train/ layouts draws the same way.
    let t = tempfile::tempdir().unwrap();
    flat_folder(&t.path().join("train"));
    let d = image_folder::load(t.path(), &o, None).unwrap();
    assert_eq!(d.manifest.layout, image_folder::Layout::TrainOnly);
    assert_eq!((d.train.len, d.test.len), (24, 6));
}

#[test]
fn grey_rgb_and_rgba_of_any_size_are_converted_and_resized() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    save(&grey_png(9, 7, 5), &r.join("train/a/grey.png"));
    save(
        &DynamicImage::ImageRgb8(ImageBuffer::from_pixel(12, 12, Rgb([255, 0, 0]))),
        &r.join("train/a/rgb.jpg"),
    );
    save(
        &DynamicImage::ImageRgba8(ImageBuffer::from_pixel(3, 9, Rgba([0, 0, 255, 7]))),
        &r.join("train/b/rgba.png"),
    );
    save(
        &DynamicImage::ImageRgb8(ImageBuffer::from_pixel(8, 8, Rgb([0, 255, 0]))),
        &r.join("val/b/x.bmp"),
    );
    // Other files and hidden ones are ignored.
    write(&r.join("train/a/notes.txt"), b"hello");
    write(&r.join("train/a/.hidden.png"), b"junk");
    assert_eq!(detect(r).unwrap(), Format::ImageFolder);

    // Without a target size mixed sizes are refused, naming two of them.
    let e = image_folder::load(r, &ImageFolderOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("differ in size") && e.contains("train/a/grey.png"),
        "{e}"
    );

    for resize in [Resize::Stretch, Resize::ShorterSideCrop] {
        let o = ImageFolderOptions {
            size: Some((6, 4)),
            resize,
            ..ImageFolderOptions::default()
        };
        let d = image_folder::load(r, &o, None).unwrap();
        assert_eq!(d.manifest.layout, image_folder::Layout::TrainVal);
        assert_eq!((d.train.len, d.test.len), (3, 1));
        assert_eq!((d.train.rows, d.train.cols, d.train.channels), (6, 4, 3));
        assert_eq!(d.train.images.len(), 3 * 6 * 4 * 3);
        assert_eq!(d.train.labels, vec![0, 0, 1]);
        // Uniform pictures stay uniform whatever the resize: grey replicated, alpha dropped.
        assert!(d.train.image(0).iter().all(|&v| v == 9));
        assert!(d.train.image(2).chunks(3).all(|p| p == [0, 0, 255]));
        let red = d.train.image(1);
        assert!(
            red.chunks(3).all(|p| p[0] > 240 && p[1] < 15 && p[2] < 15),
            "{red:?}"
        );
        assert!(d.test.image(0).chunks(3).all(|p| p == [0, 255, 0]));
        let stored: Vec<_> = d
            .manifest
            .entries
            .iter()
            .map(|e| (e.width, e.height, e.channels))
            .collect();
        assert_eq!(stored, vec![(7, 5, 1), (12, 12, 3), (3, 9, 4), (8, 8, 3)]);
        // And in grey, with the 601 weights: pure blue is 29, pure green 150.
        let g = image_folder::load(
            r,
            &ImageFolderOptions {
                channels: Some(1),
                ..o.clone()
            },
            None,
        )
        .unwrap();
        assert!(g.train.image(2).iter().all(|&v| v == 29));
        assert!(g.test.image(0).iter().all(|&v| v == 150));
    }
}

/// A train/val folder with one good picture per class, for the failure cases.
fn small_folder(root: &Path) {
    for c in ["a", "b"] {
        save(&grey_png(1, 2, 2), &root.join(format!("train/{c}/ok.png")));
        save(&grey_png(2, 2, 2), &root.join(format!("val/{c}/ok.png")));
    }
}

fn skip() -> ImageFolderOptions {
    ImageFolderOptions {
        skip_bad: true,
        ..ImageFolderOptions::default()
    }
}

#[test]
fn bad_pictures_fail_naming_the_file_or_are_listed_under_skip_bad() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    small_folder(r);
    // A truncated PNG, a text file named .jpg, and a link to nothing.
    let mut png = Vec::new();
    grey_png(3, 8, 8)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    write(&r.join("train/a/cut.png"), &png[..png.len() / 2]);
    write(&r.join("train/b/text.jpg"), b"not a picture at all");
    std::os::unix::fs::symlink(r.join("nowhere.png"), r.join("train/b/gone.png")).unwrap();

    let e = image_folder::load(r, &ImageFolderOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train/a/cut.png") && e.contains("cannot decode"),
        "{e}"
    );
    std::fs::rename(r.join("train/a/cut.png"), r.join("cut.png")).unwrap();
    let e = image_folder::scan(r, &ImageFolderOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train/b/gone.png") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::rename(r.join("cut.png"), r.join("train/a/cut.png")).unwrap();

    let d = image_folder::load(r, &skip(), None).unwrap();
    assert_eq!((d.train.len, d.test.len), (2, 2));
    let skipped: Vec<&str> = d.manifest.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        skipped,
        ["train/a/cut.png", "train/b/gone.png", "train/b/text.jpg"]
    );
}

#[test]
fn empty_classes_unknown_held_out_classes_and_no_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    small_folder(r);
    std::fs::create_dir_all(r.join("train/c")).unwrap();
    save(&grey_png(1, 2, 2), &r.join("val/zebra/z.png"));
    let e = image_folder::scan(r, &ImageFolderOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train/c") && e.contains("no pictures"), "{e}");
    std::fs::remove_dir(r.join("train/c")).unwrap();
    let e = image_folder::scan(r, &ImageFolderOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("val/zebra") && e.contains("\"zebra\" is not among"),
        "{e}"
    );
    std::fs::create_dir_all(r.join("train/c")).unwrap();
    let m = image_folder::scan(r, &skip(), None).unwrap();
    // The empty class keeps its label; the unknown one is left out.
    assert_eq!(m.classes, ["a", "b", "c"]);
    let skipped: Vec<&str> = m.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["train/c", "val/zebra"]);
    assert_eq!(m.entries.len(), 4);

    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join("train/a")).unwrap();
    let e = image_folder::scan(empty.path(), &skip(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no pictures"), "{e}");
}

#[test]
fn a_saved_manifest_round_trips_and_spares_decoding_unchanged_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    small_folder(r);
    let o = ImageFolderOptions::default();
    let m = image_folder::scan(r, &o, None).unwrap();
    let path = image_folder::manifest_path(r);
    m.save(&path).unwrap();
    let back = Manifest::load(&path).unwrap();
    assert_eq!(back, m);
    // The manifest beside the data is not taken for a class or a picture.
    assert_eq!(image_folder::scan(r, &o, Some(&back)).unwrap(), m);

    // Same size, same mtime, different (undecodable) bytes: the saved entry is trusted...
    let victim = r.join("train/a/ok.png");
    let md = std::fs::metadata(&victim).unwrap();
    let len = md.len() as usize;
    std::fs::write(&victim, vec![0u8; len]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(md.modified().unwrap())
        .unwrap();
    assert_eq!(image_folder::scan(r, &o, Some(&back)).unwrap(), m);
    // ...while a scan without it decodes the file and finds it broken.
    let e = image_folder::scan(r, &o, None).unwrap_err().to_string();
    assert!(e.contains("train/a/ok.png"), "{e}");

    write(&path, b"{ not json");
    let e = Manifest::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("intq-manifest.json") && e.contains("not a manifest"),
        "{e}"
    );
}

#[test]
fn open_writes_and_reuses_the_manifest_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    small_folder(r);
    let mut o = opts();
    o.use_manifest = true;
    let first = load(r, &o);
    let path = image_folder::manifest_path(r);
    assert_eq!(
        Manifest::load(&path).unwrap(),
        first.report.manifest.clone().unwrap()
    );
    let second = load(r, &o);
    assert_eq!(second.dataset, first.dataset);
    assert!(
        second.report.warnings.is_empty(),
        "{:?}",
        second.report.warnings
    );
}

#[test]
fn detection_names_the_path_when_nothing_fits() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for bad in [r.join("missing"), r.to_path_buf()] {
        let e = detect(&bad).unwrap_err();
        assert!(matches!(e, DataError::UnknownFormat { .. }), "{e}");
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }
    write(&r.join("notes.txt"), b"x");
    let e = detect(&r.join("notes.txt")).unwrap_err().to_string();
    assert!(e.contains("notes.txt") && e.contains("not a .npz"), "{e}");
    // A folder of folders without pictures is not an image folder.
    std::fs::create_dir_all(r.join("a/b")).unwrap();
    assert!(detect(r).is_err());
    write(&r.join("c100/train.bin"), b"");
    write(&r.join("c100/test.bin"), b"");
    assert_eq!(detect(&r.join("c100")).unwrap(), Format::Cifar100);

    assert_eq!(
        DataSpec::parse("mnist"),
        DataSpec::Registry(DatasetKind::Mnist)
    );
    assert_eq!(
        DataSpec::parse("Fashion_MNIST"),
        DataSpec::Registry(DatasetKind::FashionMnist)
    );
    assert_eq!(DataSpec::parse("./mnist"), DataSpec::Path("./mnist".into()));
}

fn cifar100_record(coarse: u8, fine: u8, v: u8) -> Vec<u8> {
    let mut r = vec![coarse, fine];
    r.extend(std::iter::repeat_n(v, 3072));
    r
}

#[test]
fn cifar_directories_read_whatever_batches_exist_and_name_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    let rec = |l: u8| cifar10_bytes(&[(l, vec![l; 3072])]);
    // data_batch_10 sorts after data_batch_2 by number.
    write(&r.join("data_batch_10.bin"), &rec(3));
    write(&r.join("data_batch_2.bin"), &[rec(1), rec(2)].concat());
    write(&r.join("test_batch.bin"), &rec(9));
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    write(&r.join("batches.meta.txt"), names.as_bytes());
    let d = cifar::load(r, cifar::CifarKind::Cifar10).unwrap();
    assert_eq!(d.train.labels, vec![1, 2, 3]);
    assert_eq!(d.test.labels, vec![9]);
    assert_eq!(d.train.class_names[9], "truck");
    let files: Vec<String> = d
        .checksums
        .iter()
        .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["data_batch_2.bin", "data_batch_10.bin", "test_batch.bin"]
    );
    assert_eq!(d.checksums[1].status, ChecksumStatus::Unknown);

    write(&r.join("data_batch_2.bin"), &rec(1)[..3000]);
    let e = cifar::load(r, cifar::CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_2.bin") && e.contains("3000 bytes"),
        "{e}"
    );
    write(&r.join("data_batch_2.bin"), &rec(10));
    let e = cifar::load(r, cifar::CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_2.bin") && e.contains("label 10"),
        "{e}"
    );
    write(&r.join("data_batch_2.bin"), &rec(0));
    std::fs::remove_file(r.join("test_batch.bin")).unwrap();
    let e = cifar::load(r, cifar::CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("not found"),
        "{e}"
    );
    write(&r.join("batches.meta.txt"), b"one\ntwo\n");
    write(&r.join("test_batch.bin"), &rec(0));
    let e = cifar::load(r, cifar::CifarKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("batches.meta.txt") && e.contains("2 class names"),
        "{e}"
    );

    let c = tempfile::tempdir().unwrap();
    let r = c.path();
    write(
        &r.join("train.bin"),
        &[cifar100_record(19, 99, 5), cifar100_record(0, 3, 6)].concat(),
    );
    write(&r.join("test.bin"), &cifar100_record(4, 42, 7));
    let coarse: String = (0..20).map(|i| format!("super{i}\n")).collect();
    write(&r.join("coarse_label_names.txt"), coarse.as_bytes());
    let mut o = opts();
    let fine = load(r, &o);
    assert_eq!(
        fine.dataset.origin,
        Origin::Path {
            format: Format::Cifar100,
            path: r.to_path_buf()
        }
    );
    assert_eq!(fine.dataset.train.labels, vec![99, 3]);
    assert_eq!(fine.dataset.train.class_names.len(), 100);
    assert_eq!(fine.dataset.train.class_names[99], "99");
    assert!(fine.dataset.test.image(0).iter().all(|&v| v == 7));
    o.cifar100_coarse = true;
    let coarse = load(r, &o);
    assert_eq!(coarse.dataset.train.labels, vec![19, 0]);
    assert_eq!(coarse.dataset.train.class_names[19], "super19");
    assert!(coarse.report.warnings.is_empty());
    assert!(coarse
        .report
        .checksums
        .iter()
        .all(|c| c.status == ChecksumStatus::Unknown));
    write(&r.join("test.bin"), &cifar100_record(20, 1, 0));
    let e = open(&DataSpec::Path(r.to_path_buf()), &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.bin") && e.contains("label 20"), "{e}");
}

fn labels_npy(descr: &str, shape: &[usize], values: &[i64]) -> Vec<u8> {
    let size: usize = descr[2..].parse().unwrap();
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|v| {
            let b = v.to_le_bytes();
            b[..size].to_vec()
        })
        .collect();
    numpy::npy_bytes(descr, shape, &bytes)
}

fn npz_of(x_train: Vec<u8>, y_train: Vec<u8>, x_test: Vec<u8>, y_test: Vec<u8>) -> Vec<u8> {
    npz(
        &[
            ("x_train", x_train),
            ("y_train", y_train),
            ("x_test", x_test),
            ("y_test", y_test),
        ],
        CompressionMethod::Deflated,
    )
}

#[test]
fn numpy_arrays_are_checked_against_each_other() {
    let p = Path::new("d.npz");
    let x = |n: usize| numpy::npy_bytes("|u1", &[n, 2, 3], &vec![4; n * 6]);
    let ok = npz_of(
        x(3),
        labels_npy("<i2", &[3], &[0, 4, 1]),
        x(1),
        labels_npy("<u4", &[1, 1], &[2]),
    );
    let d = numpy::read_npz_bytes(&ok, p, None).unwrap();
    assert_eq!(
        (d.train.len, d.train.rows, d.train.cols, d.train.channels),
        (3, 2, 3, 1)
    );
    assert_eq!(d.train.labels, vec![0, 4, 1]);
    assert_eq!(d.train.num_classes(), 5);
    assert_eq!(
        numpy::read_npz_bytes(&ok, p, Some(7))
            .unwrap()
            .test
            .num_classes(),
        7
    );
    let e = numpy::read_npz_bytes(&ok, p, Some(4))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.npz:y_train.npy") && e.contains("label 4 at index 1"),
        "{e}"
    );

    let cases = [
        (
            npz_of(
                x(3),
                labels_npy("<i8", &[2], &[0, 1]),
                x(1),
                labels_npy("<i8", &[1], &[0]),
            ),
            "y_train.npy: 2 labels but d.npz:x_train.npy holds 3 images",
        ),
        (
            npz_of(
                x(1),
                labels_npy("<i8", &[1], &[-1]),
                x(1),
                labels_npy("<i8", &[1], &[0]),
            ),
            "label -1 at index 0 is negative",
        ),
        (
            npz_of(
                numpy::npy_bytes("<f4", &[1, 1, 1], &[0; 4]),
                labels_npy("<i8", &[1], &[0]),
                x(1),
                labels_npy("<i8", &[1], &[0]),
            ),
            "dtype <f4, but uint8 images are needed",
        ),
        (
            npz_of(
                numpy::npy_bytes("|u1", &[1, 2, 3, 2], &[0; 12]),
                labels_npy("<i8", &[1], &[0]),
                x(1),
                labels_npy("<i8", &[1], &[0]),
            ),
            "images of shape [1, 2, 3, 2]",
        ),
        (
            npz_of(
                x(1),
                labels_npy("<i8", &[1, 2], &[0, 0]),
                x(1),
                labels_npy("<i8", &[1], &[0]),
            ),
            "labels of shape [1, 2]",
        ),
        (
            npz_of(
                x(1),
                labels_npy("<i8", &[1], &[0]),
                numpy::npy_bytes("|u1", &[1, 3, 2], &[0; 6]),
                labels_npy("<i8", &[1], &[0]),
            ),
            "test images are 3x2x1 (HxWxC) but train images are 2x3x1",
        ),
        (
            npz(&[("x_train", x(1))], CompressionMethod::Stored),
            "no array y_train in the archive",
        ),
        (b"PK\x03\x04 garbage".to_vec(), "not a readable .npz"),
    ];
    for (bytes, want) in cases {
        let e = numpy::read_npz_bytes(&bytes, p, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}\nwanted: {want}");
    }
}

#[test]
fn npz_entries_declaring_more_than_they_hold_are_refused_before_allocating() {
    // A shape of 2^40 bytes in a tiny stored entry: refused from the entry's size.
    let huge = numpy::npy_bytes("|u1", &[1 << 20, 1 << 10, 1 << 10], &[]);
    let bytes = npz_of(
        huge,
        labels_npy("<i8", &[1], &[0]),
        numpy::npy_bytes("|u1", &[1, 1, 1], &[0]),
        labels_npy("<i8", &[1], &[0]),
    );
    let e = numpy::read_npz_bytes(&bytes, Path::new("h.npz"), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("h.npz:x_train.npy") && e.contains("needs 1099511627776 bytes"),
        "{e}"
    );
    // The same from a .npy file on disk.
    let dir = tempfile::tempdir().unwrap();
    for (name, b) in [
        (
            "x_train",
            numpy::npy_bytes("|u1", &[1 << 20, 1 << 10, 1 << 10], &[1, 2, 3]),
        ),
        ("y_train", labels_npy("<i8", &[1], &[0])),
        ("x_test", numpy::npy_bytes("|u1", &[1, 1, 1], &[0])),
        ("y_test", labels_npy("<i8", &[1], &[0])),
    ] {
        write(&dir.path().join(format!("{name}.npy")), &b);
    }
    let e = numpy::load_npy_dir(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x_train.npy") && e.contains("only 3 follow"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("y_test.npy")).unwrap();
    write(
        &dir.path().join("x_train.npy"),
        &numpy::npy_bytes("|u1", &[1, 1, 1], &[0]),
    );
    let e = numpy::load_npy_dir(dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("y_test.npy") && e.contains("not found"), "{e}");
}

#[test]
fn info_summarises_every_kind_of_source() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    flat_folder(&r.join("flat"));
    save(&grey_png(0, 9, 3), &r.join("flat/ant/big.png"));
    let o = OpenOptions {
        image: ImageFolderOptions {
            val_split: 0.5,
            ..ImageFolderOptions::default()
        },
        ..opts()
    };
    let i = info(&DataSpec::Path(r.join("flat")), &o).unwrap();
    assert_eq!(i.format, Format::ImageFolder);
    assert_eq!(i.class_names, ["ant", "bee", "cat"]);
    assert_eq!(i.splits[0].per_class, vec![5, 5, 5]);
    assert_eq!(i.splits[1].per_class, vec![6, 5, 5]);
    assert_eq!((i.min_size, i.max_size, i.channels), ((4, 4), (3, 9), 1));
    assert!(i.checksums.is_none());
    let text = i.to_string();
    assert!(
        text.contains("image folder") && text.contains("4x4 to 3x9"),
        "{text}"
    );
    assert!(text.contains("needs a target size"), "{text}");

    let s = synth(false);
    let c = r.join("cifar");
    write(&c.join("data_batch_1.bin"), &cifar10_bytes(&s.train));
    write(&c.join("test_batch.bin"), &cifar10_bytes(&s.test));
    let i = info(&DataSpec::Path(c.clone()), &o).unwrap();
    assert_eq!(
        (i.format, i.channels, i.min_size),
        (Format::Cifar10, 3, (32, 32))
    );
    assert_eq!(i.splits[0].images, 160);
    assert_eq!(i.splits[1].per_class, vec![4; 10]);
    assert_eq!(i.checksums.as_ref().unwrap().len(), 2);
    let text = i.to_string();
    assert!(
        text.contains("MD5 differs (warning)") && text.contains("test_batch.bin"),
        "{text}"
    );

    let z = r.join("d.npz");
    write(&z, &npz(&keras_arrays(&s, true), CompressionMethod::Stored));
    let i = info(&DataSpec::Path(z.clone()), &o).unwrap();
    assert_eq!((i.format, i.channels), (Format::Npz, 1));
    let sums = i.checksums.unwrap();
    assert_eq!(sums.len(), 1);
    assert_eq!(sums[0].status, ChecksumStatus::Unknown);
    assert_eq!(sums[0].sha256.len(), 64);
}

/// The fuzz seeds (made with Python's zipfile, as numpy writes archives) are valid inputs, so
/// fuzzing starts from files that read.
#[test]
fn fuzz_seeds_read() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds");
    for name in ["keras_stored.npz", "keras_deflated.npz"] {
        let bytes = std::fs::read(seeds.join("npz").join(name)).unwrap();
        let d = numpy::read_npz_bytes(&bytes[1..], Path::new(name), None).unwrap();
        assert_eq!((d.train.len, d.train.rows, d.train.cols), (2, 3, 3));
        assert_eq!(
            (d.train.labels.clone(), d.test.labels.clone()),
            (vec![0, 1], vec![1])
        );
        assert_eq!(d.train.images, (0..18).collect::<Vec<u8>>());
    }
    let labels = std::fs::read(seeds.join("npz/labels.npy")).unwrap();
    let a = numpy::read_npy_bytes(&labels[1..], Path::new("l.npy"), true).unwrap();
    assert_eq!(a.values, numpy::Values::Int(vec![0, 5, 2]));
    let c = std::fs::read(seeds.join("cifar/cifar10_two_records")).unwrap();
    let names: Vec<String> = (0..10).map(|l| l.to_string()).collect();
    let s =
        cifar::parse_records(&c[1..], cifar::CifarKind::Cifar10, &names, Path::new("c")).unwrap();
    assert_eq!(s.labels, vec![3, 9]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Any byte of a valid `.npy` or `.npz` changed, or either cut short, reads or fails but
    /// never panics (debug builds check every shape product for overflow).
    #[test]
    fn mutated_numpy_files_never_panic(
        at in 0usize..2000,
        value in proptest::prelude::any::<u8>(),
        cut in 0usize..2000,
    ) {
        let npy = labels_npy("<i4", &[3, 1], &[1, 2, 3]);
        let s = synth(true);
        let zipped = npz(&keras_arrays(&Synth { train: s.train[..2].to_vec(), test: s.test[..1].to_vec() }, true), CompressionMethod::Stored);
        for (bytes, is_npz) in [(npy, false), (zipped, true)] {
            let mut m = bytes.clone();
            let i = at % m.len();
            m[i] = value;
            for b in [&m[..], &bytes[..cut % bytes.len()]] {
                if is_npz {
                    let _ = numpy::read_npz_bytes(b, Path::new("m.npz"), None);
                } else {
                    let _ = numpy::read_npy_bytes(b, Path::new("m.npy"), true);
                    let _ = numpy::read_npy_bytes(b, Path::new("m.npy"), false);
                }
            }
        }
    }
}
