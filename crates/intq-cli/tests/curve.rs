//! Training curves: rendered PNGs decode with the expected size and show the curves, legend and
//! text where the data puts them, SVGs name their series; odd metrics logs give a plot or a
//! clear error, never a panic.

mod common;
use common::intq;

use intq_cli::curve::{self, Log, HEIGHT, LOSS_COLOR, PLOT_X0, PLOT_X1, PLOT_Y0, PLOT_Y1, WIDTH};
use std::path::PathBuf;

struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Decoded {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = 3 * (y * self.width + x) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Pixels of colour `c` inside the plot area, as (x, y).
    fn plot_pixels(&self, c: [u8; 3]) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for y in PLOT_Y0..PLOT_Y1 {
            for x in PLOT_X0..PLOT_X1 {
                if self.pixel(x, y) == c {
                    v.push((x, y));
                }
            }
        }
        v
    }
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut r = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .expect("PNG header");
    let mut buf = vec![0; r.output_buffer_size().expect("buffer size")];
    let info = r.next_frame(&mut buf).expect("PNG data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.line_size * info.height as usize);
    Decoded {
        width: info.width,
        height: info.height,
        rgb: buf,
    }
}

fn png_of(logs: &[Log]) -> Decoded {
    let img = curve::render(logs, "small-cnn fashion-mnist float").unwrap();
    decode(&curve::encode_png(&img).unwrap())
}

/// A float run: the loss falls from 2.0 and accuracy rises, one step line every half epoch.
fn falling_log(epochs: usize) -> String {
    let mut s = String::new();
    for e in 1..=epochs {
        let loss = 2.0 / e as f64;
        s += &format!(
            "{{\"step\":{},\"epoch_f\":{},\"train_loss\":{}}}\n",
            100 * e - 50,
            e as f64 - 0.5,
            loss * 1.2
        );
        s += &format!(
            "{{\"epoch\":{e},\"step\":{},\"train_loss\":{loss},\"train_accuracy\":{},\"test_accuracy\":{},\"epoch_seconds\":1.0,\"lr\":0.01,\"qat\":false}}\n",
            100 * e,
            1.0 - 0.5 / e as f64,
            0.95 - 0.5 / e as f64
        );
    }
    s
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("curve", name)
}

#[test]
fn png_decodes_with_its_size_and_the_loss_falls_on_it() {
    let log = curve::parse_log(&falling_log(8), "float.metrics.jsonl").unwrap();
    let img = png_of(&[log]);
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    assert_eq!(img.rgb.len(), (3 * WIDTH * HEIGHT) as usize);
    // White background in a corner.
    assert_eq!(img.pixel(1, 1), [255, 255, 255]);
    let loss = img.plot_pixels(LOSS_COLOR);
    assert!(loss.len() > 100, "{} loss pixels", loss.len());
    // Falling loss: its leftmost pixels sit higher (smaller y) than its rightmost ones.
    let left = loss.iter().min_by_key(|p| p.0).unwrap();
    let right = loss.iter().max_by_key(|p| p.0).unwrap();
    assert!(left.1 + 50 < right.1, "left {left:?} right {right:?}");
    // Rising test accuracy: the opposite.
    let acc = img.plot_pixels(curve::TEST_ACC_COLOR);
    let left = acc.iter().min_by_key(|p| p.0).unwrap();
    let right = acc.iter().max_by_key(|p| p.0).unwrap();
    assert!(left.1 > right.1 + 50, "left {left:?} right {right:?}");
    assert!(!img.plot_pixels(curve::STEP_LOSS_COLOR).is_empty());

    // Text is drawn (from the bundled font): dark pixels in the title band and in the legend
    // row below the axis label, whose swatches carry every series' colour.
    let dark = |y0: u32, y1: u32| {
        (y0..y1)
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y).iter().all(|&v| v < 90))
            .count()
    };
    assert!(
        dark(0, PLOT_Y0 - 5) > 300,
        "title: {}",
        dark(0, PLOT_Y0 - 5)
    );
    let legend = HEIGHT - 35..HEIGHT;
    assert!(dark(legend.start, legend.end) > 300);
    for c in [
        LOSS_COLOR,
        curve::STEP_LOSS_COLOR,
        curve::TRAIN_ACC_COLOR,
        curve::TEST_ACC_COLOR,
    ] {
        let n = legend
            .clone()
            .flat_map(|y| (0..WIDTH).map(move |x| (x, y)))
            .filter(|&(x, y)| img.pixel(x, y) == c)
            .count();
        assert!(n >= 10, "{c:?}: {n} legend pixels");
    }
    // Tick labels left of the plot, in the loss colour, and below it.
    let left_labels = (PLOT_Y0..PLOT_Y1)
        .flat_map(|y| (0..PLOT_X0 - 2).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = img.pixel(x, y);
            p != [255, 255, 255] && p[2] > p[0]
        })
        .count();
    assert!(left_labels > 100, "{left_labels}");
    assert!(dark(PLOT_Y1 + 2, PLOT_Y1 + 45) > 200);
}

/// The contents of an SVG's `<text>` elements, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..t.find("</text>")?];
            Some(body.trim().to_string())
        })
        .collect()
}

#[test]
fn svg_names_its_series_and_the_qat_boundary() {
    let d = scratch("svg");
    let float = d.join("float.ckpt.metrics.jsonl");
    let qat = d.join("qat.ckpt.metrics.jsonl");
    std::fs::write(&float, falling_log(4)).unwrap();
    std::fs::write(&qat, falling_log(2).replace("false", "true")).unwrap();
    let out = d.join("both.curve.svg");
    curve::write_curve(&[float.clone(), qat], None, &out).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(
        svg.contains(&format!("width=\"{WIDTH}\""))
            && svg.contains(&format!("height=\"{HEIGHT}\""))
    );
    let texts = svg_texts(&svg);
    for text in [
        "float.ckpt (float) + qat.ckpt (QAT)",
        "train loss",
        "loss every n steps",
        "train accuracy",
        "test accuracy",
        "epoch",
        "accuracy",
        "QAT",
        "100%",
        "6",
    ] {
        assert!(texts.iter().any(|t| t == text), "no {text} in {texts:?}");
    }
    let hex = |c: [u8; 3]| format!("#{:02X}{:02X}{:02X}", c[0], c[1], c[2]);
    for c in [LOSS_COLOR, curve::TRAIN_ACC_COLOR, curve::TEST_ACC_COLOR] {
        assert!(svg.contains(&hex(c)), "no {} in the SVG", hex(c));
    }
    // One log alone has no boundary.
    let one = d.join("one.svg");
    curve::write_curve(&[float], None, &one).unwrap();
    let svg = std::fs::read_to_string(&one).unwrap();
    let texts = svg_texts(&svg);
    assert!(!texts.iter().any(|t| t == "QAT"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "float.ckpt (float)"), "{texts:?}");
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "temp file left behind: {names:?}");

    // Neither PNG nor SVG: refused before anything is written.
    let jpg = d.join("c.jpg");
    let e = curve::write_curve(&[d.join("float.ckpt.metrics.jsonl")], None, &jpg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&jpg.display().to_string()) && e.contains(".svg"),
        "{e}"
    );
    assert!(!jpg.exists());
}

#[test]
fn one_epoch_and_missing_values_still_plot() {
    let one = curve::parse_log(
        "{\"epoch\":1,\"step\":10,\"train_loss\":0.5,\"train_accuracy\":0.8,\"test_accuracy\":null,\"qat\":true}\n",
        "one",
    )
    .unwrap();
    let img = png_of(&[one]);
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    assert!(!img.plot_pixels(LOSS_COLOR).is_empty());
    assert!(img.plot_pixels(curve::TEST_ACC_COLOR).is_empty());

    // NaN, Infinity, missing and null losses leave no loss curve, but accuracy is drawn.
    let text = "\
{\"epoch\":1,\"train_loss\":NaN,\"train_accuracy\":0.5}
{\"epoch\":2,\"train_loss\":Infinity,\"train_accuracy\":0.6,\"test_accuracy\":0.7}
{\"epoch\":3,\"train_loss\":null,\"test_accuracy\":0.8}
{\"epoch\":4}
{\"step\":7,\"epoch_f\":4.5,\"train_loss\":NaN}
{\"step\":8,\"epoch_f\":4.6,\"train_loss\":inf}
{\"epoch\":5,\"train_loss\":-inf,\"train_accuracy\":-Infinity}
";
    let log = curve::parse_log(text, "nan").unwrap();
    let img = png_of(&[log]);
    assert!(img.plot_pixels(LOSS_COLOR).is_empty());
    assert!(img.plot_pixels(curve::STEP_LOSS_COLOR).is_empty());
    assert!(!img.plot_pixels(curve::TRAIN_ACC_COLOR).is_empty());
    assert!(!img.plot_pixels(curve::TEST_ACC_COLOR).is_empty());

    // Nothing plottable at all, huge and negative values: axes only, or clamped curves.
    for text in [
        "{\"epoch\":0}\n",
        "{\"epoch\":1e300,\"train_loss\":1e308,\"train_accuracy\":-5}\n",
        "{\"epoch\":1,\"train_loss\":-3,\"test_accuracy\":7}\n{\"epoch\":2,\"train_loss\":0}\n",
    ] {
        let log = curve::parse_log(text, "odd").unwrap();
        let img = png_of(&[log]);
        assert_eq!((img.width, img.height), (WIDTH, HEIGHT), "{text}");
    }
}

#[test]
fn empty_and_corrupt_logs_are_clear_errors() {
    for text in ["", "\n\n  \n"] {
        let e = curve::parse_log(text, "empty.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.jsonl") && e.contains("empty"), "{e}");
    }
    let cases = [
        (
            "{\"epoch\":1,\"train_loss\":0.5}\n{\"epoch\":2,\"train_lo",
            2,
        ),
        ("garbage\n", 1),
        ("{\"epoch\":1}\n\n{\"foo\":1}\n", 3),
        ("{\"epoch\":\"one\"}\n", 1),
        ("{\"epoch\":-1}\n", 1),
        ("{\"epoch\":[1]}\n", 1),
    ];
    for (text, line) in cases {
        let e = curve::parse_log(text, "bad.jsonl").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("bad.jsonl:{line}:")),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn write_curve_is_atomic_and_names_bad_files() {
    let d = scratch("write");
    let log = d.join("run.metrics.jsonl");
    std::fs::write(&log, falling_log(3)).unwrap();
    let out = d.join("run.curve.png");
    curve::write_curve(std::slice::from_ref(&log), None, &out).unwrap();
    let img = decode(&std::fs::read(&out).unwrap());
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "temp file left behind: {names:?}");

    // Invalid UTF-8 and a missing file: errors that name the file; the old PNG stays.
    let bin = d.join("binary.jsonl");
    std::fs::write(&bin, [0xff, 0xfe, b'{', b'}']).unwrap();
    let missing = d.join("nope.jsonl");
    for bad in [&bin, &missing] {
        let e = curve::write_curve(&[log.clone(), bad.clone()], None, &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&bad.display().to_string()), "{e}");
    }
    assert_eq!(
        decode(&std::fs::read(&out).unwrap()).rgb,
        img.rgb,
        "a failed run changed the PNG"
    );
}

#[test]
fn curve_command_combines_logs_and_names_bad_paths() {
    let d = scratch("cli");
    let float = d.join("float.ckpt.metrics.jsonl");
    let qat = d.join("qat.ckpt.metrics.jsonl");
    std::fs::write(&float, falling_log(4)).unwrap();
    std::fs::write(&qat, falling_log(2).replace("false", "true")).unwrap();
    let out = d.join("both.png");
    let o = intq(&[
        "curve",
        float.to_str().unwrap(),
        qat.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let both = decode(&std::fs::read(&out).unwrap());
    // The QAT run continues the axis: the loss curve reaches further right than the float
    // run's alone.
    let alone = png_of(&[curve::read_log(&float).unwrap()]);
    let right = |img: &Decoded| img.plot_pixels(LOSS_COLOR).iter().map(|p| p.0).max();
    let (rb, ra) = (right(&both).unwrap(), right(&alone).unwrap());
    assert!(
        rb + 5 >= PLOT_X1 - 10 && ra + 5 >= PLOT_X1 - 10,
        "{rb} {ra}"
    );
    let left_half = |img: &Decoded| {
        img.plot_pixels(LOSS_COLOR)
            .iter()
            .filter(|p| p.0 < (PLOT_X0 + PLOT_X1) / 2)
            .count()
    };
    assert_ne!(left_half(&both), left_half(&alone));
    // The dashed float→QAT boundary: 4 of 6 epochs along the axis, absent from one log alone.
    let sep = [150, 150, 150];
    let boundary = |img: &Decoded| img.plot_pixels(sep).iter().map(|p| p.0).collect::<Vec<_>>();
    let xs = boundary(&both);
    assert!(xs.len() > 50, "{} boundary pixels", xs.len());
    let at = PLOT_X0 + (PLOT_X1 - PLOT_X0) * 4 / 6;
    assert!(xs.iter().all(|&x| x.abs_diff(at) < 40), "{at}: {xs:?}");
    assert!(boundary(&alone).is_empty());

    let missing = d.join("no-such-dir").join("m.jsonl");
    let bad_out = d.join("bad.png");
    let o = intq(&[
        "curve",
        missing.to_str().unwrap(),
        "--out",
        bad_out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert!(!bad_out.exists());

    let corrupt = d.join("corrupt.jsonl");
    std::fs::write(&corrupt, "{\"epoch\":1}\n{\"epo").unwrap();
    let o = intq(&[
        "curve",
        corrupt.to_str().unwrap(),
        "--out",
        bad_out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:2:", corrupt.display())), "{err}");
    assert!(!bad_out.exists());
}

/// Keys of a flat JSON line in order, read independently of the CLI's parser.
fn keys(line: &str) -> Vec<String> {
    let parts: Vec<&str> = line.split('"').collect();
    (1..parts.len())
        .step_by(2)
        .filter(|&i| parts.get(i + 1).is_some_and(|n| n.starts_with(':')))
        .map(|i| parts[i].to_string())
        .collect()
}

fn field(line: &str, key: &str) -> f64 {
    let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let end = line[at..].find([',', '}']).unwrap();
    line[at..at + end].parse().unwrap()
}

#[test]
fn train_writes_step_losses_and_the_curve() {
    let d = scratch("train");
    // 64 training images at batch 32: two equal batches per epoch.
    let f = d.join("data").join("fashion-mnist");
    std::fs::create_dir_all(&f).unwrap();
    for (split, n) in [("train", 64usize), ("t10k", 16)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let px: Vec<u8> = (0..n * 784)
            .map(|i| {
                if (i % 784) / 28 == 3 * (i / 784 % 10) {
                    230
                } else {
                    (i * 7 % 31) as u8
                }
            })
            .collect();
        common::write_split(&f, split, &px, &labels);
    }
    let out = d.join("t.ckpt");
    let o = intq(&[
        "train",
        "--data-dir",
        d.join("data").to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--log-every",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(d.join("t.ckpt.metrics.jsonl")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 6, "{log}");
    let epoch_keys = [
        "epoch",
        "step",
        "train_loss",
        "train_accuracy",
        "test_accuracy",
        "epoch_seconds",
        "lr",
        "qat",
    ];
    for (e, chunk) in lines.chunks(3).enumerate() {
        let (s1, s2, ep) = (chunk[0], chunk[1], chunk[2]);
        assert_eq!(keys(ep), epoch_keys, "{ep}");
        assert_eq!(field(ep, "epoch"), (e + 1) as f64);
        for (k, s) in [s1, s2].iter().enumerate() {
            assert_eq!(keys(s), ["step", "epoch_f", "train_loss"], "{s}");
            assert_eq!(field(s, "step"), (2 * e + k + 1) as f64);
            assert_eq!(field(s, "epoch_f"), e as f64 + (k + 1) as f64 / 2.0);
        }
        // Equal batches: the epoch's loss is the mean of its per-step losses.
        let mean = (field(s1, "train_loss") + field(s2, "train_loss")) / 2.0;
        assert!((mean - field(ep, "train_loss")).abs() < 2e-6, "{chunk:?}");
    }
    let img = decode(&std::fs::read(d.join("t.ckpt.curve.png")).unwrap());
    assert_eq!((img.width, img.height), (WIDTH, HEIGHT));
    assert!(!img.plot_pixels(LOSS_COLOR).is_empty());
    assert!(!img.plot_pixels(curve::STEP_LOSS_COLOR).is_empty());
    assert!(!d.join(".t.ckpt.curve.png.tmp").exists());

    // Stopped inside the first epoch with step losses off, the log is still empty: no curve,
    // and no warning about it.
    let early = d.join("e.ckpt");
    let o = intq(&[
        "train",
        "--data-dir",
        d.join("data").to_str().unwrap(),
        "--batch-size",
        "32",
        "--log-every",
        "0",
        "--max-steps",
        "1",
        "--quiet",
        "--out",
        early.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("not drawn"), "{err}");
    assert!(!d.join("e.ckpt.curve.png").exists());
}
