//! Training curves from metrics logs (`OUT.metrics.jsonl`): train loss on a left scale, train
//! and test accuracy on a 0–100 % right scale, drawn with `plotters` as PNG or SVG. Text uses
//! the DejaVu Sans font bundled in `assets/`, so a machine without fonts draws it the same.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Map, Value};

/// Image size in pixels.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 500;
/// The plot area (inclusive-exclusive pixel bounds): curves are drawn only inside it.
pub const PLOT_X0: u32 = 80;
pub const PLOT_X1: u32 = 720;
pub const PLOT_Y0: u32 = 50;
pub const PLOT_Y1: u32 = 410;

pub type Rgb = [u8; 3];
/// Per-epoch train loss (polyline with points).
pub const LOSS_COLOR: Rgb = [31, 119, 180];
/// Train loss every N steps (thin line, lighter).
pub const STEP_LOSS_COLOR: Rgb = [158, 202, 232];
pub const TRAIN_ACC_COLOR: Rgb = [255, 127, 14];
pub const TEST_ACC_COLOR: Rgb = [44, 160, 44];
const GRID: Rgb = [225, 225, 225];
const SEPARATOR: Rgb = [150, 150, 150];

/// The font every text of the chart is drawn in (Bitstream Vera licence, see
/// `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
pub const FONT_FAMILY: &str = "sans-serif";

/// A metrics log bigger than this is refused rather than read into memory.
const MAX_LOG_BYTES: u64 = 64 << 20;

/// One per-epoch line of a metrics log; absent or non-finite values are `None` (a gap).
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub epoch: f64,
    pub train_loss: Option<f64>,
    pub train_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
}

/// One `{"step","epoch_f","train_loss"}` line: the mean loss of the last N steps.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step: u64,
    pub epoch_f: f64,
    pub train_loss: f64,
}

/// A metrics log reduced to the last run it holds (see [`parse_log`]).
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub name: String,
    pub epochs: Vec<EpochRow>,
    pub steps: Vec<StepRow>,
    /// From the lines' `"qat"` field, where present.
    pub qat: Option<bool>,
}

impl Log {
    /// The largest epoch coordinate in the log (0 when empty).
    fn x_max(&self) -> f64 {
        let e = self.epochs.iter().map(|r| r.epoch);
        let s = self.steps.iter().map(|r| r.epoch_f);
        e.chain(s).fold(0.0, f64::max)
    }
}

/// `line` with the non-finite numbers that Python (`NaN`, `Infinity`, `-Infinity`) and Rust
/// (`NaN`, `inf`, `-inf`) print outside strings replaced by `null`, which JSON can parse: a
/// diverged run logs them, and they count as missing values.
fn non_finite_to_null(line: &str) -> std::borrow::Cow<'_, str> {
    const WORDS: [&str; 5] = ["-Infinity", "Infinity", "NaN", "-inf", "inf"];
    if !WORDS.iter().any(|w| line.contains(w)) {
        return line.into();
    }
    let mut out = String::with_capacity(line.len() + 8);
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            if let Some(w) = WORDS.iter().find(|w| rest.starts_with(*w)) {
                out.push_str("null");
                rest = &rest[w.len()..];
                continue;
            }
        }
        if in_string && escaped {
            escaped = false;
        } else if in_string && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_string = !in_string;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// The finite number under `key`, if any.
fn num(obj: &Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

enum Row {
    Epoch(EpochRow),
    Step(StepRow),
}

/// Parses a metrics log. Blank lines are skipped; a line that is not a JSON object, or has
/// neither `"epoch"` nor `"step"`, is an error naming `name` and the line. A log appended to
/// by several runs keeps only the last one: a line whose step is not after the previous
/// lines' (a fresh run, or a resumed one replaying steps after its checkpoint) drops the lines
/// it supersedes.
pub fn parse_log(text: &str, name: &str) -> Result<Log> {
    // (step, kind) increases along one run: a step line at step S precedes the epoch line at S.
    let mut rows: Vec<((u64, u8), Row)> = Vec::new();
    let mut qat = None;
    let mut records = 0usize;
    for (no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let obj: Map<String, Value> =
            serde_json::from_str(&non_finite_to_null(line)).map_err(|e| {
                // serde_json places the error at "line 1" of the one line given to it.
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                anyhow::anyhow!("{name}:{}: {msg}", no + 1)
            })?;
        records += 1;
        if let Some(q) = obj.get("qat").and_then(Value::as_bool) {
            qat = Some(q);
        }
        let step = num(&obj, "step").filter(|s| *s >= 0.0).map(|s| s as u64);
        let (kind, row) = if obj.contains_key("epoch") {
            let Some(epoch) = num(&obj, "epoch").filter(|e| *e >= 0.0) else {
                bail!("{name}:{}: \"epoch\" is not a non-negative number", no + 1);
            };
            let row = EpochRow {
                epoch,
                train_loss: num(&obj, "train_loss"),
                train_accuracy: num(&obj, "train_accuracy"),
                test_accuracy: num(&obj, "test_accuracy"),
            };
            (1, Row::Epoch(row))
        } else if obj.contains_key("step") {
            let (Some(step), Some(epoch_f), Some(train_loss)) = (
                step,
                num(&obj, "epoch_f").filter(|e| *e >= 0.0),
                num(&obj, "train_loss"),
            ) else {
                // A step line with a missing or non-finite value: a gap, not an error.
                continue;
            };
            let row = StepRow {
                step,
                epoch_f,
                train_loss,
            };
            (0, Row::Step(row))
        } else {
            bail!(
                "{name}:{}: neither \"epoch\" nor \"step\" in the line",
                no + 1
            );
        };
        match step {
            Some(s) => {
                let key = (s, kind);
                rows.retain(|(k, _)| *k < key);
                rows.push((key, row));
            }
            // Logs without steps cannot be ordered; keep them in file order.
            None => rows.push(((u64::MAX, kind), row)),
        }
    }
    if records == 0 {
        bail!("{name}: empty metrics log (no JSON lines)");
    }
    let mut log = Log {
        name: name.to_string(),
        qat,
        ..Log::default()
    };
    for (_, r) in rows {
        match r {
            Row::Epoch(e) => log.epochs.push(e),
            Row::Step(s) => log.steps.push(s),
        }
    }
    Ok(log)
}

/// Reads and parses a metrics log; errors name the file.
pub fn read_log(path: &Path) -> Result<Log> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read the metrics log", path.display()))?
        .len();
    if len > MAX_LOG_BYTES {
        bail!(
            "{}: {len} bytes, more than the {MAX_LOG_BYTES} a metrics log may have",
            path.display()
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the metrics log", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))?;
    parse_log(text, &path.display().to_string())
}

/// An RGB image, rows top to bottom.
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn pixel(&self, x: u32, y: u32) -> Rgb {
        let i = 3 * (y * self.width + x) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// A "nice" number (1, 2, 2.5 or 5 times a power of ten) at least `x`.
fn nice_ceil(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= x * (1.0 - 1e-9) {
            return m * p;
        }
    }
    10.0 * p
}

/// `v` with as many decimals as the tick step `step` needs.
fn tick_label(v: f64, step: f64) -> String {
    let mut d = 0usize;
    while d < 6
        && ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-6
    {
        d += 1;
    }
    format!("{v:.d$}")
}

fn color(c: Rgb) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Registers the bundled font with plotters (once per process).
pub fn register_font() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()
    });
    if !ok {
        bail!("the bundled chart font does not load");
    }
    Ok(())
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT_FAMILY, size).into_font().color(&BLACK)
}

/// The scales of a chart of `logs`: the epoch axis holds the logs one after the other.
struct Scales {
    /// Where each log starts on the epoch axis.
    offsets: Vec<f64>,
    x_step: f64,
    x_max: f64,
    loss_step: f64,
}

impl Scales {
    fn of(logs: &[Log]) -> Self {
        let mut offsets = Vec::with_capacity(logs.len());
        let mut x_total = 0.0;
        for l in logs {
            offsets.push(x_total);
            x_total += l.x_max();
        }
        // About eight ticks, whole epochs from two epochs on; the axis ends at the tick after
        // the data.
        let x_total = x_total.max(1.0);
        let mut x_step = nice_ceil(x_total / 8.0);
        if x_total >= 2.0 {
            x_step = x_step.max(1.0);
        }
        if x_step > 1.0 && x_step.fract() != 0.0 {
            // 2.5 epochs: 5 reads better.
            x_step *= 2.0;
        }
        let x_max = (x_total / x_step - 1e-9).ceil() * x_step;
        let loss_max = logs
            .iter()
            .flat_map(|l| {
                let e = l.epochs.iter().filter_map(|r| r.train_loss);
                e.chain(l.steps.iter().map(|r| r.train_loss))
            })
            .fold(0.0, f64::max);
        // Five loss intervals, so that loss ticks share grid lines with 0, 20, ..., 100 %.
        let loss_step = nice_ceil(loss_max / 5.0);
        Scales {
            offsets,
            x_step,
            x_max,
            loss_step,
        }
    }

    fn x_ticks(&self) -> Vec<f64> {
        let n = (self.x_max / self.x_step + 1e-9).floor() as usize;
        (0..=n).map(|k| k as f64 * self.x_step).collect()
    }
}

/// A linear axis with its ticks at given values (plotters would pick its own), labelled by the
/// chart's formatters.
struct Ticked {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        Ticked {
            inner: range.into(),
            ticks,
        }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Grid lines at the ticks only, none between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Reads one value of an epoch row (a curve).
type Field = fn(&EpochRow) -> Option<f64>;

/// Draws `logs` side by side on one epoch axis (e.g. float then QAT: the second continues
/// where the first ends, after a dashed separator) onto `root`, WIDTH × HEIGHT pixels.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    logs: &[Log],
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let s = Scales::of(logs);
    let loss_top = 5.0 * s.loss_step;
    // The scales reach a little past the data, so that points at their ends (the last epoch,
    // 100 %, zero loss) are not cut by the frame.
    const PAD: f64 = 0.02;
    let (xp, lp) = (s.x_max * PAD, loss_top * PAD);
    let x_range = || Ticked::new(-xp..s.x_max + xp, s.x_ticks());
    let loss_ticks = (0..=5).map(|i| i as f64 * s.loss_step).collect();
    let acc_ticks = (0..=5).map(|i| i as f64 * 20.0).collect();

    root.fill(&WHITE)?;
    root.draw(&Text::new(
        title.to_string(),
        (WIDTH as i32 / 2, PLOT_Y0 as i32 / 2),
        font(20.0).pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;

    let mut chart = ChartBuilder::on(root)
        .margin_top(PLOT_Y0)
        .margin_bottom(HEIGHT - PLOT_Y1 - 50)
        .x_label_area_size(50)
        // The axis names sit at the label areas' outer edges: margins keep them near the ticks.
        .margin_left(PLOT_X0 - 62)
        .margin_right(WIDTH - PLOT_X1 - 62)
        .y_label_area_size(62)
        .right_y_label_area_size(62)
        .build_cartesian_2d(x_range(), Ticked::new(-lp..loss_top + lp, loss_ticks))?
        .set_secondary_coord(
            x_range(),
            Ticked::new(-100.0 * PAD..100.0 + 100.0 * PAD, acc_ticks),
        );
    debug_assert_eq!(
        chart.plotting_area().get_pixel_range(),
        (
            PLOT_X0 as i32..PLOT_X1 as i32,
            PLOT_Y0 as i32..PLOT_Y1 as i32
        )
    );

    let x_fmt = |v: &f64| tick_label(*v, s.x_step);
    let loss_fmt = |v: &f64| tick_label(*v, s.loss_step);
    let acc_fmt = |v: &f64| format!("{v:.0}%");
    chart
        .configure_mesh()
        .bold_line_style(color(GRID))
        .light_line_style(TRANSPARENT)
        .axis_style(BLACK)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&loss_fmt)
        .x_label_style(font(13.0))
        .y_label_style(font(13.0).color(&color(LOSS_COLOR)))
        .x_desc("epoch")
        .y_desc("train loss")
        .axis_desc_style(font(15.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .axis_style(BLACK)
        .y_label_formatter(&acc_fmt)
        .label_style(font(13.0))
        .y_desc("accuracy")
        .axis_desc_style(font(15.0))
        .draw()?;
    // The frame's top edge (the axes draw the other three).
    chart.plotting_area().draw(&PathElement::new(
        vec![(-xp, loss_top + lp), (s.x_max + xp, loss_top + lp)],
        BLACK,
    ))?;

    // Curves; values clamp to the scales.
    let cx = |x: f64| x.clamp(0.0, s.x_max);
    for (i, (l, &off)) in logs.iter().zip(&s.offsets).enumerate() {
        if i > 0 {
            chart.draw_series(DashedLineSeries::new(
                [(cx(off), -lp), (cx(off), loss_top + lp)],
                5,
                4,
                color(SEPARATOR).into(),
            ))?;
            if let Some(q) = l.qat {
                chart.plotting_area().draw(&Text::new(
                    if q { "QAT" } else { "float" },
                    (cx(off), loss_top),
                    font(13.0)
                        .color(&color(SEPARATOR))
                        .pos(Pos::new(HPos::Left, VPos::Top)),
                ))?;
            }
        }
        let steps = l
            .steps
            .iter()
            .map(|r| (cx(off + r.epoch_f), r.train_loss.clamp(0.0, loss_top)));
        chart.draw_series(LineSeries::new(steps, color(STEP_LOSS_COLOR)))?;

        let accuracy: [(Field, Rgb); 2] = [
            (|r| r.train_accuracy, TRAIN_ACC_COLOR),
            (|r| r.test_accuracy, TEST_ACC_COLOR),
        ];
        for (get, c) in accuracy {
            let pts: Vec<(f64, f64)> = l
                .epochs
                .iter()
                .filter_map(|r| get(r).map(|v| (cx(off + r.epoch), (100.0 * v).clamp(0.0, 100.0))))
                .collect();
            let style = color(c).stroke_width(2);
            chart.draw_secondary_series(LineSeries::new(pts.iter().copied(), style))?;
            chart
                .draw_secondary_series(pts.iter().map(|&p| Circle::new(p, 3, color(c).filled())))?;
        }
        let pts: Vec<(f64, f64)> = l
            .epochs
            .iter()
            .filter_map(|r| {
                r.train_loss
                    .map(|v| (cx(off + r.epoch), v.clamp(0.0, loss_top)))
            })
            .collect();
        let style = color(LOSS_COLOR).stroke_width(2);
        chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
        chart.draw_series(
            pts.iter()
                .map(|&p| Circle::new(p, 3, color(LOSS_COLOR).filled())),
        )?;
    }

    // Legend, centred below the axis label.
    let mut entries = vec![
        ("train loss", LOSS_COLOR, true),
        ("train accuracy", TRAIN_ACC_COLOR, true),
        ("test accuracy", TEST_ACC_COLOR, true),
    ];
    if logs.iter().any(|l| !l.steps.is_empty()) {
        entries.insert(1, ("loss every n steps", STEP_LOSS_COLOR, false));
    }
    let style = font(14.0);
    const SWATCH: i32 = 24;
    const GAP: i32 = 22;
    let widths: Vec<i32> = entries
        .iter()
        .map(|(t, _, _)| root.estimate_text_size(t, &style).map(|(w, _)| w as i32))
        .collect::<Result<_, _>>()?;
    let total: i32 = widths.iter().map(|w| SWATCH + 6 + w + GAP).sum::<i32>() - GAP;
    let mut x = (WIDTH as i32 - total) / 2;
    let y = HEIGHT as i32 - 20;
    for ((text, c, point), w) in entries.into_iter().zip(widths) {
        let width = if point { 2 } else { 1 };
        root.draw(&PathElement::new(
            vec![(x, y), (x + SWATCH, y)],
            color(c).stroke_width(width),
        ))?;
        if point {
            root.draw(&Circle::new((x + SWATCH / 2, y), 3, color(c).filled()))?;
        }
        root.draw(&Text::new(
            text,
            (x + SWATCH + 6, y),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += SWATCH + 6 + w + GAP;
    }
    root.present()
}

/// Renders `logs` as an RGB bitmap.
pub fn render(logs: &[Log], title: &str) -> Result<Image> {
    register_font()?;
    let mut rgb = vec![0u8; (3 * WIDTH * HEIGHT) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, logs, title).map_err(|e| anyhow::anyhow!("drawing the curve: {e}"))?;
    }
    Ok(Image {
        width: WIDTH,
        height: HEIGHT,
        rgb,
    })
}

/// Renders `logs` as an SVG document.
pub fn render_svg(logs: &[Log], title: &str) -> Result<String> {
    register_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, logs, title).map_err(|e| anyhow::anyhow!("drawing the curve: {e}"))?;
    }
    Ok(svg)
}

/// The image as PNG bytes.
pub fn encode_png(img: &Image) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().context("encoding the PNG")?;
    w.write_image_data(&img.rgb).context("encoding the PNG")?;
    w.finish().context("encoding the PNG")?;
    Ok(out)
}

/// Writes `bytes` to `path` through `.NAME.tmp` beside it and a rename, so that a reader
/// (an image viewer refreshing during training) never sees a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        bail!("{}: {e}", path.display());
    }
    Ok(())
}

/// A default title for logs given on the command line: their file names and float/QAT.
pub fn default_title(logs: &[Log]) -> String {
    logs.iter()
        .map(|l| {
            let stem = Path::new(&l.name)
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(".metrics.jsonl")
                        .to_string()
                })
                .unwrap_or_default();
            match l.qat {
                Some(true) => format!("{stem} (QAT)"),
                Some(false) => format!("{stem} (float)"),
                None => stem,
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The image formats a curve is written in, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

fn format_of(out: &Path) -> Result<Format> {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(Format::Png),
        Some("svg") => Ok(Format::Svg),
        _ => bail!(
            "{}: a training curve is written as .png or .svg",
            out.display()
        ),
    }
}

/// Reads `logs`, renders them and writes the image to `out` atomically, as PNG or SVG after
/// `out`'s extension.
pub fn write_curve(logs: &[PathBuf], title: Option<&str>, out: &Path) -> Result<()> {
    let format = format_of(out)?;
    if logs.is_empty() {
        bail!("no metrics log given");
    }
    let logs = logs
        .iter()
        .map(|p| read_log(p))
        .collect::<Result<Vec<_>>>()?;
    let title = title.map_or_else(|| default_title(&logs), str::to_string);
    let bytes = match format {
        Format::Png => encode_png(&render(&logs, &title)?)?,
        Format::Svg => render_svg(&logs, &title)?.into_bytes(),
    };
    write_atomic(out, &bytes)
}

/// `intq curve`: render metrics logs as a training-curve image.
#[derive(clap::Args, Debug)]
pub struct CurveArgs {
    /// Metrics logs (`OUT.metrics.jsonl`); several are drawn one after the other on one epoch
    /// axis, e.g. float.ckpt.metrics.jsonl qat.ckpt.metrics.jsonl.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The image to write: PNG or SVG, after its extension (.png, .svg).
    #[arg(long)]
    pub out: PathBuf,
    /// Title (default: the logs' names and float/QAT).
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run(a: CurveArgs) -> Result<()> {
    write_curve(&a.logs, a.title.as_deref(), &a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        for x in [0.013, 0.2, 0.46, 1.0, 2.3, 7.0, 12.0, 460.0] {
            let n = nice_ceil(x);
            assert!(n >= x && n <= 2.5 * x, "{x} -> {n}");
        }
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(0.75, 0.25), "0.75");
        assert_eq!(tick_label(10.0, 5.0), "10");
    }

    #[test]
    fn non_finite_numbers_become_null_outside_strings() {
        assert_eq!(
            non_finite_to_null(r#"{"a":NaN,"b":-Infinity,"c":inf,"d":"NaN \"inf\"","e":-inf}"#),
            r#"{"a":null,"b":null,"c":null,"d":"NaN \"inf\"","e":null}"#
        );
        let o: Map<String, Value> =
            serde_json::from_str(&non_finite_to_null(r#"{"a": NaN, "b": 1.5}"#)).unwrap();
        assert_eq!((num(&o, "a"), num(&o, "b")), (None, Some(1.5)));
        // Not a number, so still an error.
        assert!(serde_json::from_str::<Value>(&non_finite_to_null("{\"a\":NaNa}")).is_err());
    }

    #[test]
    fn output_format_follows_the_extension() {
        assert_eq!(format_of(Path::new("a/b.curve.png")).unwrap(), Format::Png);
        assert_eq!(format_of(Path::new("b.SVG")).unwrap(), Format::Svg);
        for bad in ["b.jpg", "b", "png"] {
            let e = format_of(Path::new(bad)).unwrap_err().to_string();
            assert!(e.starts_with(bad) && e.contains(".svg"), "{e}");
        }
    }

    #[test]
    fn scales_continue_one_log_after_another() {
        let log = |x: f64, loss: f64| Log {
            epochs: vec![EpochRow {
                epoch: x,
                train_loss: Some(loss),
                train_accuracy: None,
                test_accuracy: None,
            }],
            ..Log::default()
        };
        let s = Scales::of(&[log(8.0, 2.3), log(4.0, 0.5)]);
        assert_eq!(s.offsets, [0.0, 8.0]);
        assert_eq!((s.x_step, s.x_max), (2.0, 12.0));
        assert_eq!(s.x_ticks(), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(s.loss_step, 0.5);
        let s = Scales::of(&[log(0.0, f64::NAN)]);
        assert_eq!((s.x_max, s.loss_step), (1.0, 1.0));
    }

    #[test]
    fn later_runs_supersede_earlier_lines() {
        let text = "\
{\"step\":50,\"epoch_f\":0.5,\"train_loss\":2.0}
{\"step\":100,\"epoch_f\":1.0,\"train_loss\":1.5}
{\"epoch\":1,\"step\":100,\"train_loss\":1.7,\"train_accuracy\":0.5,\"test_accuracy\":0.6,\"qat\":false}
{\"step\":150,\"epoch_f\":1.5,\"train_loss\":1.2}
{\"step\":150,\"epoch_f\":1.5,\"train_loss\":1.1}
{\"step\":200,\"epoch_f\":2.0,\"train_loss\":1.0}
{\"epoch\":2,\"step\":200,\"train_loss\":1.05,\"train_accuracy\":0.7,\"test_accuracy\":null,\"qat\":false}
";
        let l = parse_log(text, "m").unwrap();
        let steps: Vec<(u64, f64)> = l.steps.iter().map(|s| (s.step, s.train_loss)).collect();
        // The replayed step 150 (a resume) replaces the first one.
        assert_eq!(steps, [(50, 2.0), (100, 1.5), (150, 1.1), (200, 1.0)]);
        assert_eq!(l.epochs.len(), 2);
        assert_eq!(l.epochs[1].test_accuracy, None);
        assert_eq!(l.qat, Some(false));
        // A fresh run appended to the same log leaves only itself.
        let again = format!("{text}{{\"epoch\":1,\"step\":100,\"train_loss\":0.9}}\n");
        let l = parse_log(&again, "m").unwrap();
        assert_eq!(l.epochs.len(), 1);
        assert_eq!(l.epochs[0].train_loss, Some(0.9));
        assert_eq!(l.steps.len(), 2);
    }
}
