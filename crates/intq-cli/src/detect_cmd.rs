//! `intq detect`: runs an SSD-style detector (a model ending in TFLite's
//! `TFLite_Detection_PostProcess`) on one picture, prints its detections as JSON in pixels of
//! the picture, and optionally draws them on it.

use anyhow::{bail, Context, Result};
use intq_engine::{DType, DetectionOptions, DetectionPart, Graph, Op, TensorData, TensorId};
use plotters::prelude::*;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct DetectArgs {
    /// A `.intq` or `.tflite` detector whose outputs come from TFLite_Detection_PostProcess.
    model: PathBuf,
    /// The picture (PNG, JPEG or BMP); it is resized to the model's input.
    image: PathBuf,
    /// Class names, one per line (line k names class k), as TFLite's label files; a first line
    /// "???" (the background placeholder of TFLite's label maps) is skipped.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Report detections scoring at least this.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Draw the boxes, labels and scores on the picture and write it here as PNG.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Serialize)]
struct Detection {
    class_id: usize,
    label: Option<String>,
    score: f32,
    /// `[ymin, xmin, ymax, xmax]` in pixels of the picture, clamped to it.
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

#[derive(Serialize)]
struct Report {
    detections: Vec<Detection>,
}

/// The post-process's four outputs (boxes, classes, scores, count) and its options: those of
/// the first post-process op that writes the boxes.
fn post_process_outputs(graph: &Graph) -> Option<([TensorId; 4], DetectionOptions)> {
    let (operands, options) = graph.ops().iter().find_map(|op| match op {
        Op::DetectionPostProcess {
            boxes,
            scores,
            anchors,
            part: DetectionPart::Boxes,
            options,
            ..
        } => Some(((*boxes, *scores, *anchors), *options)),
        _ => None,
    })?;
    let mut ids = Vec::with_capacity(4);
    for want in DetectionPart::ALL {
        ids.push(graph.ops().iter().find_map(|op| match op {
            Op::DetectionPostProcess {
                boxes,
                scores,
                anchors,
                part,
                options: o,
                output,
            } if (*boxes, *scores, *anchors) == operands && *part == want && *o == options => {
                Some(*output)
            }
            _ => None,
        })?);
    }
    Some(([ids[0], ids[1], ids[2], ids[3]], options))
}

fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the labels", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    if labels.first().is_some_and(|l| l == "???") {
        labels.remove(0);
    }
    Ok(labels)
}

/// The model's input for the picture resized to `[1, h, w, c]`: 8-bit inputs take the pixels as
/// codes (uint8 as they are, int8 shifted by 128), as TFLite's detection models expect; a
/// float32 input takes `(p - 127.5) / 127.5`, or what the model's input record says.
fn model_input(
    model: &intq_engine::Model,
    picture: &image::DynamicImage,
) -> Result<(TensorData, [usize; 3])> {
    let g = model.graph();
    let [id] = g.inputs() else {
        bail!(
            "the model has {} inputs; a detector takes one picture",
            g.inputs().len()
        );
    };
    let t = g.tensor(*id);
    let (h, w, c) = match t.shape.as_slice() {
        [1, h, w, c @ (1 | 3)] => (*h, *w, *c),
        s => bail!(
            "the model's input '{}' has shape {s:?}; a detector's is [1, height, width, 3 or 1]",
            t.name
        ),
    };
    let (wu, hu) = (
        u32::try_from(w).context("input width")?,
        u32::try_from(h).context("input height")?,
    );
    let resized = picture.resize_exact(wu, hu, image::imageops::FilterType::Triangle);
    let px: Vec<u8> = if c == 3 {
        resized.to_rgb8().into_raw()
    } else {
        resized.to_luma8().into_raw()
    };
    let record = crate::fidelity::model_input(model)?;
    let data = match t.dtype {
        DType::U8 => TensorData::U8(px),
        DType::I8 => TensorData::I8(px.iter().map(|&p| (p as i16 - 128) as i8).collect()),
        DType::F32 => TensorData::F32(match record {
            Some(r) => px
                .iter()
                .map(|&p| r.pixel_scale * (p as i32 - r.pixel_zero_point) as f32)
                .collect(),
            None => px.iter().map(|&p| (p as f32 - 127.5) / 127.5).collect(),
        }),
        DType::I32 => bail!("the model's input '{}' is int32", t.name),
    };
    Ok((data, [h, w, c]))
}

fn reals(v: &TensorData) -> &[f32] {
    match v {
        TensorData::F32(v) => v,
        _ => &[],
    }
}

pub fn run(a: DetectArgs) -> Result<()> {
    let (model, left) = crate::inspect::load(&a.model)?;
    let Some((outputs, options)) = post_process_outputs(model.graph()) else {
        let cause = if left.ops.is_empty() {
            String::new()
        } else {
            let ops: Vec<String> = left.ops.iter().map(crate::inspect::op_label).collect();
            format!(
                " (what the model computes after {} is left out: intq does not support it)",
                ops.join(", ")
            )
        };
        bail!(
            "{}: the model has no TFLite_Detection_PostProcess outputs (boxes, classes, scores, \
             count){cause}; `intq detect` runs SSD-style detectors that end in that op",
            a.model.display()
        );
    };
    let picture = image::ImageReader::open(&a.image)
        .with_context(|| format!("{}: cannot open the picture", a.image.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read the picture", a.image.display()))?
        .decode()
        .with_context(|| format!("{}: cannot decode the picture", a.image.display()))?;
    let labels = match &a.labels {
        Some(p) => read_labels(p)?,
        None => Vec::new(),
    };
    let (input, _) = model_input(&model, &picture)?;
    let values = model
        .run_with(&[input], &outputs)
        .with_context(|| format!("{}: running the detector", a.model.display()))?;
    let (boxes, classes, scores) = (reals(&values[0]), reals(&values[1]), reals(&values[2]));
    let count = reals(&values[3]).first().copied().unwrap_or(0.0).max(0.0) as usize;
    let (pw, ph) = (picture.width() as f32, picture.height() as f32);
    // Fast NMS writes max_classes_per_detection entries per detection, of which the first
    // min(that, num_classes) are real; regular NMS one entry per detection.
    let per = if options.use_regular_nms {
        1
    } else {
        options.max_classes_per_detection
    };
    let used = if options.use_regular_nms {
        1
    } else {
        per.min(options.num_classes)
    };
    let mut detections = Vec::new();
    for k in 0..scores.len() {
        if k / per >= count || k % per >= used || scores[k] < a.threshold {
            continue;
        }
        let b = &boxes[4 * k..4 * k + 4];
        let clamp = |v: f32, size: f32| (v * size).clamp(0.0, size);
        let class_id = classes[k] as usize;
        detections.push(Detection {
            class_id,
            label: labels.get(class_id).cloned(),
            score: scores[k],
            bbox: [
                clamp(b[0], ph),
                clamp(b[1], pw),
                clamp(b[2], ph),
                clamp(b[3], pw),
            ],
        });
    }
    if let Some(out) = &a.out {
        let png = draw(&picture, &detections)?;
        intq_cli::curve::write_atomic(out, &png)?;
    }
    let text = serde_json::to_string_pretty(&Report { detections }).context("writing the JSON")?;
    writeln!(std::io::stdout().lock(), "{text}").context("writing the detections")?;
    Ok(())
}

/// A colour per class, from a small palette that reads on photographs.
fn class_color(class: usize) -> RGBColor {
    const PALETTE: [(u8, u8, u8); 8] = [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
    ];
    let (r, g, b) = PALETTE[class % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The picture with each detection's box and a "label score" tag above it, as PNG bytes.
fn draw(picture: &image::DynamicImage, detections: &[Detection]) -> Result<Vec<u8>> {
    intq_cli::curve::register_font()?;
    let (w, h) = (picture.width(), picture.height());
    let mut rgb = picture.to_rgb8().into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let style: TextStyle = (intq_cli::curve::FONT_FAMILY, 13.0)
            .into_font()
            .color(&WHITE);
        for d in detections {
            let color = class_color(d.class_id);
            let [y0, x0, y1, x1] = d.bbox.map(|v| v.round() as i32);
            let stroke = if w.min(h) >= 200 { 2 } else { 1 };
            root.draw(&Rectangle::new(
                [(x0, y0), (x1, y1)],
                color.stroke_width(stroke),
            ))
            .map_err(|e| anyhow::anyhow!("drawing a box: {e}"))?;
            let text = match &d.label {
                Some(l) => format!("{l} {:.2}", d.score),
                None => format!("{} {:.2}", d.class_id, d.score),
            };
            let (tw, th) = root
                .estimate_text_size(&text, &style)
                .map_err(|e| anyhow::anyhow!("measuring a label: {e}"))?;
            let (tw, th) = (tw as i32 + 4, th as i32 + 2);
            // Above the box where there is room, else inside its top.
            let ty = if y0 >= th { y0 - th } else { y0 };
            root.draw(&Rectangle::new(
                [(x0, ty), (x0 + tw, ty + th)],
                color.filled(),
            ))
            .map_err(|e| anyhow::anyhow!("drawing a label: {e}"))?;
            root.draw(&Text::new(text, (x0 + 2, ty + 1), style.clone()))
                .map_err(|e| anyhow::anyhow!("drawing a label: {e}"))?;
        }
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing the detections: {e}"))?;
    }
    intq_cli::curve::encode_png(&intq_cli::curve::Image {
        width: w,
        height: h,
        rgb,
    })
}
