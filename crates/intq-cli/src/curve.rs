//! Training-curve PNGs from metrics logs (`OUT.metrics.jsonl`): train loss on a left scale,
//! train and test accuracy on a 0–100 % right scale, drawn here with a built-in 5×7 font and
//! written with the `png` crate, so that no plotting stack is needed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

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
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const SEPARATOR: Rgb = [150, 150, 150];

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

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Null,
    Bool(bool),
    Str,
}

/// A flat JSON object (the only shape the trainer writes). `NaN`/`Infinity` are accepted as
/// numbers because other tools write them; they count as missing values.
fn parse_object(line: &str) -> std::result::Result<Vec<(String, Value)>, String> {
    let b = line.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let string = |i: &mut usize| -> std::result::Result<String, String> {
        // b[*i] is the opening quote.
        *i += 1;
        let mut s = Vec::new();
        while *i < b.len() {
            match b[*i] {
                b'"' => {
                    *i += 1;
                    return Ok(String::from_utf8_lossy(&s).into_owned());
                }
                b'\\' => {
                    s.push(*b.get(*i + 1).ok_or("unterminated string")?);
                    *i += 2;
                }
                c => {
                    s.push(c);
                    *i += 1;
                }
            }
        }
        Err("unterminated string".into())
    };
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    i += 1;
    let mut out = Vec::new();
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            ws(&mut i);
            if b.get(i) != Some(&b'"') {
                return Err(format!("expected a key at column {}", i + 1));
            }
            let key = string(&mut i)?;
            ws(&mut i);
            if b.get(i) != Some(&b':') {
                return Err(format!("expected ':' after \"{key}\""));
            }
            i += 1;
            ws(&mut i);
            let rest = &line[i..];
            let word = |w: &str| rest.starts_with(w).then_some(w.len());
            let value = match b.get(i) {
                None => return Err(format!("no value for \"{key}\"")),
                Some(b'"') => {
                    string(&mut i)?;
                    Value::Str
                }
                Some(b'{' | b'[') => return Err(format!("nested value for \"{key}\"")),
                Some(_) => {
                    if let Some(n) = word("null") {
                        i += n;
                        Value::Null
                    } else if let Some(n) = word("true") {
                        i += n;
                        Value::Bool(true)
                    } else if let Some(n) = word("false") {
                        i += n;
                        Value::Bool(false)
                    } else if let Some(n) = word("NaN").or(word("Infinity")).or(word("-Infinity")) {
                        i += n;
                        Value::Num(f64::NAN)
                    } else {
                        let n = rest
                            .bytes()
                            .take_while(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
                            .count();
                        let v: f64 = rest[..n]
                            .parse()
                            .map_err(|_| format!("bad value for \"{key}\""))?;
                        i += n;
                        Value::Num(v)
                    }
                }
            };
            out.push((key, value));
            ws(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(format!("expected ',' or '}}' at column {}", i + 1)),
            }
        }
    }
    ws(&mut i);
    if i != b.len() {
        return Err(format!("trailing characters at column {}", i + 1));
    }
    Ok(out)
}

fn num(obj: &[(String, Value)], key: &str) -> Option<f64> {
    obj.iter().rev().find_map(|(k, v)| match v {
        Value::Num(x) if k == key && x.is_finite() => Some(*x),
        _ => None,
    })
}

fn has(obj: &[(String, Value)], key: &str) -> bool {
    obj.iter().any(|(k, _)| k == key)
}

enum Row {
    Epoch(EpochRow),
    Step(StepRow),
}

/// Parses a metrics log. Blank lines are skipped; a line that is not a flat JSON object, or
/// has neither `"epoch"` nor `"step"`, is an error naming `name` and the line. A log appended
/// to by several runs keeps only the last one: a line whose step is not after the previous
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
        let obj = parse_object(line).map_err(|e| anyhow::anyhow!("{name}:{}: {e}", no + 1))?;
        records += 1;
        if let Some((_, Value::Bool(q))) = obj.iter().find(|(k, _)| k == "qat") {
            qat = Some(*q);
        }
        let step = num(&obj, "step").filter(|s| *s >= 0.0).map(|s| s as u64);
        let (kind, row) = if has(&obj, "epoch") {
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
        } else if has(&obj, "step") {
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
    fn new(width: u32, height: u32) -> Self {
        Image {
            width,
            height,
            rgb: WHITE.repeat((width * height) as usize),
        }
    }

    pub fn pixel(&self, x: u32, y: u32) -> Rgb {
        let i = 3 * (y * self.width + x) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && x < self.width as i64 && y < self.height as i64 {
            let i = 3 * (y as usize * self.width as usize + x as usize);
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    fn fill(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A line `thick` pixels wide (Bresenham), optionally dashed.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, thick: i64, dash: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut n) = (x0, y0, dx + dy, 0u32);
        loop {
            if !dash || (n / 4) % 2 == 0 {
                self.fill(x - (thick - 1) / 2, y - (thick - 1) / 2, thick, thick, c);
            }
            n += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 5×7 font (upper case), `scale` pixels per font pixel; returns its width.
    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb, scale: i64) -> i64 {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.fill(cx + col * scale, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
            cx += 6 * scale;
        }
        cx - x
    }
}

/// Width in pixels of `s` at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// The 5×7 glyph of `c` (rows top to bottom, bit 4 = leftmost column); letters are drawn
/// upper case, characters without a glyph as '?'.
pub fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '@' => [0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        ' ' => [0; 7],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04],
    }
}

/// The characters [`glyph`] draws (besides '?').
pub const FONT_CHARS: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.%-/:+()_,=@# ";

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

/// Reads one value of an epoch row (a curve).
type Field = fn(&EpochRow) -> Option<f64>;

/// Draws `logs` side by side on one epoch axis (e.g. float then QAT: the second continues
/// where the first ends, after a dashed separator).
pub fn render(logs: &[Log], title: &str) -> Image {
    let mut img = Image::new(WIDTH, HEIGHT);
    let (px0, px1, py0, py1) = (
        PLOT_X0 as i64,
        PLOT_X1 as i64,
        PLOT_Y0 as i64,
        PLOT_Y1 as i64,
    );
    let mut offsets = Vec::with_capacity(logs.len());
    let mut x_total = 0.0;
    for l in logs {
        offsets.push(x_total);
        x_total += l.x_max();
    }
    // About eight ticks, whole epochs from two epochs on; the axis ends at the tick after the
    // data.
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
    let loss_top = 5.0 * loss_step;
    // Data sit INSET pixels inside the frame, so that points at the ends of the scales (the
    // last epoch, 100 %, zero loss) are not cut by it.
    const INSET: i64 = 6;
    let fx = |x: f64| {
        let t = (x / x_max).clamp(0.0, 1.0);
        px0 + INSET + (t * (px1 - 1 - px0 - 2 * INSET) as f64).round() as i64
    };
    let fy = |v: f64, top: f64| {
        let t = (v / top).clamp(0.0, 1.0);
        py1 - 1 - INSET - (t * (py1 - 1 - py0 - 2 * INSET) as f64).round() as i64
    };

    // Grid and ticks.
    for i in 0..=5 {
        let y = fy(i as f64 * loss_step, loss_top);
        img.line((px0, y), (px1 - 1, y), GRID, 1, false);
        let l = tick_label(i as f64 * loss_step, loss_step);
        img.text(px0 - 8 - text_width(&l, 1), y - 3, &l, LOSS_COLOR, 1);
        img.text(px1 + 8, y - 3, &format!("{}%", i * 20), BLACK, 1);
    }
    let mut k = 0;
    loop {
        let x = k as f64 * x_step;
        if x > x_max * (1.0 + 1e-9) {
            break;
        }
        let xp = fx(x);
        img.line((xp, py0), (xp, py1 - 1), GRID, 1, false);
        let l = tick_label(x, x_step);
        img.text(xp - text_width(&l, 1) / 2, py1 + 8, &l, BLACK, 1);
        k += 1;
    }
    // Axes box.
    img.line((px0, py0), (px0, py1 - 1), BLACK, 1, false);
    img.line((px1 - 1, py0), (px1 - 1, py1 - 1), BLACK, 1, false);
    img.line((px0, py1 - 1), (px1 - 1, py1 - 1), BLACK, 1, false);
    img.line((px0, py0), (px1 - 1, py0), BLACK, 1, false);
    img.text(px0 - 30, py0 - 16, "LOSS", LOSS_COLOR, 1);
    img.text(px1 + 2, py0 - 16, "ACCURACY", BLACK, 1);
    let xl = "EPOCH";
    img.text(
        (px0 + px1) / 2 - text_width(xl, 1) / 2,
        py1 + 22,
        xl,
        BLACK,
        1,
    );

    // Title: scale 2 when it fits.
    let scale = if text_width(title, 2) <= WIDTH as i64 - 20 {
        2
    } else {
        1
    };
    img.text(
        (WIDTH as i64 - text_width(title, scale)) / 2,
        (py0 - 7 * scale) / 2 - 4,
        title,
        BLACK,
        scale,
    );

    // Curves, clipped to the plot area by construction (values clamp to the scales).
    for (l, &off) in logs.iter().zip(&offsets) {
        if off > 0.0 {
            let xp = fx(off);
            img.line((xp, py0 + 1), (xp, py1 - 2), SEPARATOR, 1, true);
        }
        let steps: Vec<(i64, i64)> = l
            .steps
            .iter()
            .map(|r| (fx(off + r.epoch_f), fy(r.train_loss, loss_top)))
            .collect();
        for w in steps.windows(2) {
            img.line(w[0], w[1], STEP_LOSS_COLOR, 1, false);
        }
        let series: [(Field, f64, Rgb); 3] = [
            (|r| r.train_accuracy, 1.0, TRAIN_ACC_COLOR),
            (|r| r.test_accuracy, 1.0, TEST_ACC_COLOR),
            (|r| r.train_loss, loss_top, LOSS_COLOR),
        ];
        for (get, top, c) in series {
            let pts: Vec<(i64, i64)> = l
                .epochs
                .iter()
                .filter_map(|r| get(r).map(|v| (fx(off + r.epoch), fy(v, top))))
                .collect();
            for w in pts.windows(2) {
                img.line(w[0], w[1], c, 2, false);
            }
            for &(x, y) in &pts {
                img.fill(x - 2, y - 2, 5, 5, c);
            }
        }
    }

    // Legend, below the axis label.
    let mut entries = vec![
        ("train loss", LOSS_COLOR),
        ("train acc", TRAIN_ACC_COLOR),
        ("test acc", TEST_ACC_COLOR),
    ];
    if logs.iter().any(|l| !l.steps.is_empty()) {
        entries.insert(1, ("loss per n steps", STEP_LOSS_COLOR));
    }
    let total: i64 = entries
        .iter()
        .map(|(s, _)| 24 + text_width(s, 1) + 20)
        .sum();
    let mut x = (WIDTH as i64 - total) / 2;
    let y = HEIGHT as i64 - 30;
    for (s, c) in entries {
        img.line((x, y + 3), (x + 18, y + 3), c, 2, false);
        img.fill(x + 7, y + 1, 5, 5, c);
        x += 24;
        x += img.text(x, y, s, BLACK, 1) + 20;
    }
    img
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

/// Reads `logs`, renders them and writes the PNG to `out` atomically.
pub fn write_curve(logs: &[PathBuf], title: Option<&str>, out: &Path) -> Result<()> {
    if logs.is_empty() {
        bail!("no metrics log given");
    }
    let logs = logs
        .iter()
        .map(|p| read_log(p))
        .collect::<Result<Vec<_>>>()?;
    let title = title.map_or_else(|| default_title(&logs), str::to_string);
    let png = encode_png(&render(&logs, &title))?;
    write_atomic(out, &png)
}

/// `intq curve`: render metrics logs as a training-curve PNG.
#[derive(clap::Args, Debug)]
pub struct CurveArgs {
    /// Metrics logs (`OUT.metrics.jsonl`); several are drawn one after the other on one epoch
    /// axis, e.g. float.ckpt.metrics.jsonl qat.ckpt.metrics.jsonl.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// The PNG to write.
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
    fn glyphs_are_distinct() {
        let chars: Vec<char> = FONT_CHARS.chars().collect();
        for (i, &a) in chars.iter().enumerate() {
            for &b in &chars[i + 1..] {
                assert_ne!(glyph(a), glyph(b), "{a:?} and {b:?} look the same");
            }
            assert_ne!(glyph(a), glyph('\u{1}'), "{a:?} falls back to '?'");
        }
    }

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
    fn parser_edges() {
        assert!(parse_object("{}").unwrap().is_empty());
        let o = parse_object(r#" {"a": -1.5e2, "b":null,"c":"x\"y","d":true, "e":NaN} "#).unwrap();
        assert_eq!(o[0], ("a".into(), Value::Num(-150.0)));
        assert_eq!(o[1].1, Value::Null);
        assert_eq!(o[2].1, Value::Str);
        assert_eq!(o[3].1, Value::Bool(true));
        assert_eq!(num(&o, "e"), None);
        for bad in [
            "",
            "[1]",
            "{\"a\":1",
            "{\"a\":}",
            "{\"a\":1}x",
            "{\"a\":[1]}",
            "{a:1}",
            "{\"a\":\"x",
            "{\"a\":1,}",
            "{\"a\":--}",
        ] {
            assert!(parse_object(bad).is_err(), "{bad:?} accepted");
        }
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
