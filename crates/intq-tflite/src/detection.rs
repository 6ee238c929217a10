//! The custom options of `TFLite_Detection_PostProcess`: a FlexBuffers map, read into the
//! engine's [`DetectionOptions`] and written back from them.

use crate::TfliteError;
use flexbuffers::Builder;
use intq_engine::{DetectionOptions, DetectionPart, Graph, Op, TensorId};
use std::collections::HashMap;

/// The op's custom code.
pub const CUSTOM_CODE: &str = "TFLite_Detection_PostProcess";

/// TFLite's default `detections_per_class` when the map lacks it.
const DEFAULT_DETECTIONS_PER_CLASS: usize = 100;

/// A bounds-checked reader of what the options need from a FlexBuffer: a root map whose
/// values are numbers or booleans. (The `flexbuffers` crate, which writes the map, indexes
/// unchecked when reading, so a hostile file could make it panic.)
struct FlexMap<'a> {
    buf: &'a [u8],
    /// Address of the first value, the values' byte width, and the entry count.
    values: usize,
    width: usize,
    len: usize,
    /// Address of the first key offset and the keys' byte width.
    keys: usize,
    key_width: usize,
}

const FLEX_NULL: u8 = 0;
const FLEX_INT: u8 = 1;
const FLEX_UINT: u8 = 2;
const FLEX_FLOAT: u8 = 3;
const FLEX_INDIRECT_INT: u8 = 6;
const FLEX_INDIRECT_UINT: u8 = 7;
const FLEX_INDIRECT_FLOAT: u8 = 8;
const FLEX_MAP: u8 = 9;
const FLEX_BOOL: u8 = 26;

fn truncated() -> String {
    "the custom options are not a FlexBuffer: an offset or size points outside its bytes".into()
}

impl<'a> FlexMap<'a> {
    fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8], String> {
        at.checked_add(n)
            .and_then(|end| self.buf.get(at..end))
            .ok_or_else(truncated)
    }
    fn uint(&self, at: usize, width: usize) -> Result<u64, String> {
        let b = self.bytes(at, width)?;
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }
    /// The address `at` minus the offset stored there.
    fn back(&self, at: usize, width: usize) -> Result<usize, String> {
        let off = self.uint(at, width)?;
        usize::try_from(off)
            .ok()
            .and_then(|o| at.checked_sub(o))
            .ok_or_else(truncated)
    }
    fn size(&self, at: usize, width: usize) -> Result<usize, String> {
        usize::try_from(self.uint(at, width)?).map_err(|_| truncated())
    }

    fn root(buf: &'a [u8]) -> Result<FlexMap<'a>, String> {
        let n = buf.len();
        if n < 3 {
            return Err(format!(
                "the custom options are not a FlexBuffer: {n} bytes"
            ));
        }
        let root_width = buf[n - 1] as usize;
        let packed = buf[n - 2];
        if ![1, 2, 4, 8].contains(&root_width) || n < 2 + root_width {
            return Err(format!(
                "the custom options are not a FlexBuffer: root width {root_width}"
            ));
        }
        if packed >> 2 != FLEX_MAP {
            return Err(format!(
                "the custom options are a flexbuffer of type {}, not a map",
                packed >> 2
            ));
        }
        let mut m = FlexMap {
            buf,
            values: 0,
            width: 1 << (packed & 3),
            len: 0,
            keys: 0,
            key_width: 0,
        };
        let w = m.width;
        m.values = m.back(n - 2 - root_width, root_width)?;
        let below = |k: usize| m.values.checked_sub(k * w).ok_or_else(truncated);
        m.len = m.size(below(1)?, w)?;
        m.key_width = m.size(below(2)?, w)?;
        m.keys = m.back(below(3)?, w)?;
        if ![1, 2, 4, 8].contains(&m.key_width)
            || m.size(
                m.keys.checked_sub(m.key_width).ok_or_else(truncated)?,
                m.key_width,
            )? != m.len
        {
            return Err(truncated());
        }
        // Every value, type byte and key offset lies inside the buffer.
        m.bytes(m.values, m.len.checked_mul(w + 1).ok_or_else(truncated)?)?;
        m.bytes(
            m.keys,
            m.len.checked_mul(m.key_width).ok_or_else(truncated)?,
        )?;
        Ok(m)
    }

    fn key(&self, i: usize) -> Result<&'a [u8], String> {
        let at = self.back(self.keys + i * self.key_width, self.key_width)?;
        let rest = self.buf.get(at..).ok_or_else(truncated)?;
        let end = rest.iter().position(|&c| c == 0).ok_or_else(truncated)?;
        Ok(&rest[..end])
    }

    /// The number under `key`, as TFLite's `AsInt32`, `AsFloat` and `AsBool` read ints,
    /// unsigned ints, floats and booleans; `None` when the map lacks it or holds null.
    fn number(&self, key: &str) -> Result<Option<f64>, String> {
        let mut found = None;
        for i in 0..self.len {
            if self.key(i)? == key.as_bytes() {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else { return Ok(None) };
        let slot = self.values + i * self.width;
        let packed = self.bytes(self.values + self.len * self.width + i, 1)?[0];
        let (kind, child) = (packed >> 2, 1usize << (packed & 3));
        let (at, width) = match kind {
            FLEX_INDIRECT_INT | FLEX_INDIRECT_UINT | FLEX_INDIRECT_FLOAT => {
                (self.back(slot, self.width)?, child)
            }
            _ => (slot, self.width),
        };
        let raw = self.uint(at, width)?;
        let v = match kind {
            FLEX_NULL => return Ok(None),
            FLEX_INT | FLEX_INDIRECT_INT => {
                let shift = 64 - 8 * width as u32;
                (((raw << shift) as i64) >> shift) as f64
            }
            FLEX_UINT | FLEX_INDIRECT_UINT | FLEX_BOOL => raw as f64,
            FLEX_FLOAT | FLEX_INDIRECT_FLOAT if width == 4 => f32::from_bits(raw as u32) as f64,
            FLEX_FLOAT | FLEX_INDIRECT_FLOAT if width == 8 => f64::from_bits(raw),
            other => {
                return Err(format!(
                    "option '{key}' is a flexbuffer of type {other} (width {width}), not a number"
                ))
            }
        };
        Ok(Some(v))
    }
}

/// Reads the options map. Missing `detections_per_class` is 100 and missing `use_regular_nms`
/// false, as in TFLite; the other keys are required. Ranges are checked by the engine's
/// validation, which names the op.
pub fn parse_options(bytes: &[u8]) -> Result<DetectionOptions, String> {
    let map = FlexMap::root(bytes)?;
    let required = |key: &str| -> Result<f64, String> {
        map.number(key)?
            .ok_or_else(|| format!("the custom options lack '{key}'"))
    };
    let count = |key: &str, v: f64| -> Result<usize, String> {
        if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) {
            Ok(v as usize)
        } else {
            Err(format!("option '{key}' is {v}, not a count"))
        }
    };
    let int = |key: &str| -> Result<usize, String> { count(key, required(key)?) };
    Ok(DetectionOptions {
        max_detections: int("max_detections")?,
        max_classes_per_detection: int("max_classes_per_detection")?,
        detections_per_class: match map.number("detections_per_class")? {
            Some(v) => count("detections_per_class", v)?,
            None => DEFAULT_DETECTIONS_PER_CLASS,
        },
        use_regular_nms: map.number("use_regular_nms")?.is_some_and(|v| v != 0.0),
        nms_score_threshold: required("nms_score_threshold")? as f32,
        nms_iou_threshold: required("nms_iou_threshold")? as f32,
        num_classes: int("num_classes")?,
        y_scale: required("y_scale")? as f32,
        x_scale: required("x_scale")? as f32,
        h_scale: required("h_scale")? as f32,
        w_scale: required("w_scale")? as f32,
    })
}

/// Writes the options map with the keys TFLite's converter writes.
pub fn build_options(o: &DetectionOptions) -> Vec<u8> {
    let mut b = Builder::default();
    let mut m = b.start_map();
    m.push("max_detections", o.max_detections as i32);
    m.push(
        "max_classes_per_detection",
        o.max_classes_per_detection as i32,
    );
    m.push("detections_per_class", o.detections_per_class as i32);
    m.push("use_regular_nms", o.use_regular_nms);
    m.push("nms_score_threshold", o.nms_score_threshold);
    m.push("nms_iou_threshold", o.nms_iou_threshold);
    m.push("num_classes", o.num_classes as i32);
    m.push("y_scale", o.y_scale);
    m.push("x_scale", o.x_scale);
    m.push("h_scale", o.h_scale);
    m.push("w_scale", o.w_scale);
    m.end_map();
    b.view().to_vec()
}

/// The four engine ops each TFLite post-process op is written from: for the index of each op
/// writing the boxes, the outputs of it and of the first unclaimed ops after it (wrapping round)
/// with the same operands and options writing the classes, scores and count. Refuses a graph
/// where a part has no such group, which TFLite's op could not express.
pub fn group_parts(graph: &Graph) -> Result<HashMap<usize, [TensorId; 4]>, TfliteError> {
    let ops = graph.ops();
    let key = |op: &Op| match op {
        Op::DetectionPostProcess {
            boxes,
            scores,
            anchors,
            output,
            part,
            options,
        } => Some(((*boxes, *scores, *anchors, *options), *part, *output)),
        _ => None,
    };
    let refuse = |index: usize, message: String| TfliteError::Unsupported {
        index,
        op: CUSTOM_CODE.into(),
        message,
    };
    let mut claimed = vec![false; ops.len()];
    let mut groups = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some((operands, DetectionPart::Boxes, output)) = key(op) else {
            continue;
        };
        claimed[i] = true;
        let mut outputs = [output; 4];
        for (k, &p) in DetectionPart::ALL.iter().enumerate().skip(1) {
            let j = (i + 1..ops.len())
                .chain(0..i)
                .find(|&j| {
                    !claimed[j]
                        && matches!(key(&ops[j]), Some((o, q, _)) if o == operands && q == p)
                })
                .ok_or_else(|| {
                    refuse(
                        i,
                        format!(
                            "writes four outputs, but no op of the graph writes its {p:?} part"
                        ),
                    )
                })?;
            claimed[j] = true;
            outputs[k] = key(&ops[j]).expect("found").2;
        }
        groups.insert(i, outputs);
    }
    if let Some(j) = (0..ops.len()).find(|&j| !claimed[j] && key(&ops[j]).is_some()) {
        return Err(refuse(
            j,
            "writes one part of the post-process, but no op with its operands writes the boxes"
                .into(),
        ));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> DetectionOptions {
        DetectionOptions {
            max_detections: 10,
            max_classes_per_detection: 2,
            detections_per_class: 5,
            use_regular_nms: true,
            nms_score_threshold: 0.25,
            nms_iou_threshold: 0.5,
            num_classes: 3,
            y_scale: 10.0,
            x_scale: 10.0,
            h_scale: 5.0,
            w_scale: 5.0,
        }
    }

    #[test]
    fn options_round_trip() {
        assert_eq!(
            parse_options(&build_options(&options())).unwrap(),
            options()
        );
    }

    #[test]
    fn defaults_and_refusals() {
        let mut b = Builder::default();
        let mut m = b.start_map();
        for k in ["max_detections", "max_classes_per_detection", "num_classes"] {
            m.push(k, 3i32);
        }
        for k in [
            "nms_score_threshold",
            "nms_iou_threshold",
            "y_scale",
            "x_scale",
            "h_scale",
        ] {
            m.push(k, 0.5f32);
        }
        m.end_map();
        let e = parse_options(b.view()).unwrap_err();
        assert!(e.contains("lack 'w_scale'"), "{e}");

        let mut b = Builder::default();
        let mut m = b.start_map();
        for k in ["max_detections", "max_classes_per_detection", "num_classes"] {
            m.push(k, 3i32);
        }
        for k in [
            "nms_score_threshold",
            "nms_iou_threshold",
            "y_scale",
            "x_scale",
            "h_scale",
            "w_scale",
        ] {
            m.push(k, 0.5f64);
        }
        m.end_map();
        let o = parse_options(b.view()).unwrap();
        assert_eq!((o.detections_per_class, o.use_regular_nms), (100, false));

        let mut b = Builder::default();
        let mut m = b.start_map();
        m.push("max_detections", "ten");
        m.end_map();
        let e = parse_options(b.view()).unwrap_err();
        assert!(
            e.contains("'max_detections'") && e.contains("not a number"),
            "{e}"
        );

        let mut b = Builder::default();
        let mut m = b.start_map();
        m.push("max_detections", -4i32);
        m.end_map();
        assert!(parse_options(b.view()).unwrap_err().contains("not a count"));

        assert!(parse_options(&[]).unwrap_err().contains("not a FlexBuffer"));
        // Indirect (wide) numbers.
        let mut b = Builder::default();
        let mut m = b.start_map();
        m.push("max_detections", flexbuffers::IndirectInt(7));
        m.push("num_classes", flexbuffers::IndirectUInt(3));
        m.push("x_scale", flexbuffers::IndirectFloat(2.5));
        m.push("nms_iou_threshold", u64::MAX);
        m.end_map();
        let map = FlexMap::root(b.view()).unwrap();
        assert_eq!(map.number("max_detections").unwrap(), Some(7.0));
        assert_eq!(map.number("num_classes").unwrap(), Some(3.0));
        assert_eq!(map.number("x_scale").unwrap(), Some(2.5));
        assert_eq!(
            map.number("nms_iou_threshold").unwrap(),
            Some(u64::MAX as f64)
        );
        assert_eq!(map.number("y_scale").unwrap(), None);
        let mut b = Builder::default();
        b.build_singleton(7i32);
        assert!(parse_options(b.view()).unwrap_err().contains("not a map"));
        // Negative ints read sign-extended.
        let mut b = Builder::default();
        let mut m = b.start_map();
        m.push("max_detections", -3i8);
        m.push("w_scale", 0.5f64);
        m.end_map();
        let map = FlexMap::root(b.view()).unwrap();
        assert_eq!(map.number("max_detections").unwrap(), Some(-3.0));
    }

    #[test]
    fn mangled_bytes_give_errors_not_panics() {
        let good = build_options(&options());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..1 + round % 4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state as usize) % bytes.len();
                bytes[at] = (state >> 32) as u8;
            }
            if round % 7 == 0 {
                bytes.truncate((state as usize >> 8) % bytes.len());
            }
            let _ = parse_options(&bytes);
        }
    }
}
