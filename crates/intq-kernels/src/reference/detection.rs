//! Reference `TFLite_Detection_PostProcess` (docs/spec.md §11): SSD box decoding against the
//! anchors and fast or regular non-max suppression. The one float op of the engine: TFLite runs it
//! in f32 (and f64 for the decoding) on dequantized inputs, so this kernel repeats its order of
//! operations and its sort order among equal scores to give its bytes.

/// The op's custom options, as TFLite's flexbuffer names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionOptions {
    /// Detections (anchors) kept in the outputs.
    pub max_detections: usize,
    /// Classes reported per detection by fast NMS.
    pub max_classes_per_detection: usize,
    /// Boxes kept per class by regular NMS before the classes are merged.
    pub detections_per_class: usize,
    /// Regular (per class) NMS instead of fast (per anchor) NMS.
    pub use_regular_nms: bool,
    /// Scores below this are never selected.
    pub nms_score_threshold: f32,
    /// Boxes overlapping a selected one by more than this IoU are suppressed; in (0, 1].
    pub nms_iou_threshold: f32,
    /// Classes, background excluded.
    pub num_classes: usize,
    pub y_scale: f32,
    pub x_scale: f32,
    pub h_scale: f32,
    pub w_scale: f32,
}

impl DetectionOptions {
    /// Entries of each output: `max_detections * max_classes_per_detection`.
    pub fn output_len(&self) -> usize {
        self.max_detections * self.max_classes_per_detection
    }
}

/// One input of the op: uint8 codes with their `(S, Z)`, or reals.
#[derive(Debug, Clone, Copy)]
pub enum DetectionInput<'a> {
    U8 {
        codes: &'a [u8],
        scale: f32,
        zero_point: i32,
    },
    F32(&'a [f32]),
}

impl DetectionInput<'_> {
    /// The real at `i`: TFLite's `(float(q) - Z) * S` in f32.
    pub fn real(&self, i: usize) -> f32 {
        match self {
            DetectionInput::U8 {
                codes,
                scale,
                zero_point,
            } => (codes[i] as f32 - *zero_point as f32) * scale,
            DetectionInput::F32(v) => v[i],
        }
    }
}

/// The most detections (`max_detections`, and `max_classes_per_detection`) the op may ask for,
/// and the most entries (their product) each output may have.
pub const MAX_DETECTIONS: usize = 1 << 16;
pub const MAX_DETECTION_ENTRIES: usize = 1 << 20;

/// The four outputs: boxes `[N, 4]` (ymin, xmin, ymax, xmax), classes `[N]`, scores `[N]` and
/// the count of detections, with `N` = [`DetectionOptions::output_len`]. Entries past the
/// detections are 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    pub boxes: Vec<f32>,
    pub classes: Vec<f32>,
    pub scores: Vec<f32>,
    pub count: f32,
}

/// A decoded box, corners.
#[derive(Debug, Clone, Copy)]
struct Corners {
    ymin: f32,
    xmin: f32,
    ymax: f32,
    xmax: f32,
}

/// Decodes the first four values of each box encoding (`y, x, h, w` relative to its anchor,
/// `[A, box_len]`) against `anchors` (`[A, 4]` as `y, x, h, w` reals), in f64 as TFLite does.
fn decode(
    boxes: DetectionInput,
    box_len: usize,
    anchors: &[f32],
    o: &DetectionOptions,
) -> Vec<Corners> {
    let a = anchors.len() / 4;
    (0..a)
        .map(|i| {
            let e = |k: usize| boxes.real(i * box_len + k) as f64;
            let (ay, ax, ah, aw) = (
                anchors[4 * i] as f64,
                anchors[4 * i + 1] as f64,
                anchors[4 * i + 2] as f64,
                anchors[4 * i + 3] as f64,
            );
            let yc = (e(0) / o.y_scale as f64 * ah + ay) as f32;
            let xc = (e(1) / o.x_scale as f64 * aw + ax) as f32;
            let half_h = (0.5 * (e(2) / o.h_scale as f64).exp() * ah) as f32;
            let half_w = (0.5 * (e(3) / o.w_scale as f64).exp() * aw) as f32;
            Corners {
                ymin: yc - half_h,
                xmin: xc - half_w,
                ymax: yc + half_h,
                xmax: xc + half_w,
            }
        })
        .collect()
}

/// `std::max<float>` and `std::min<float>`: the first argument unless the second compares
/// greater (smaller), which fixes what a NaN gives.
fn cmax(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}
fn cmin(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// Intersection over union in f32, 0 when either box has no area.
fn iou(p: &Corners, q: &Corners) -> f32 {
    let area_p = (p.ymax - p.ymin) * (p.xmax - p.xmin);
    let area_q = (q.ymax - q.ymin) * (q.xmax - q.xmin);
    if area_p <= 0.0 || area_q <= 0.0 {
        return 0.0;
    }
    let ymin = cmax(p.ymin, q.ymin);
    let xmin = cmax(p.xmin, q.xmin);
    let ymax = cmin(p.ymax, q.ymax);
    let xmax = cmin(p.xmax, q.xmax);
    let inter = cmax(ymax - ymin, 0.0) * cmax(xmax - xmin, 0.0);
    inter / (area_p + area_q - inter)
}

/// NMS of one score per box: keeps the boxes scoring at least the threshold, visits them by
/// decreasing score (a stable sort: equal scores in box order), selects each one still active
/// and deactivates the later ones overlapping it by more than the IoU threshold; at most
/// `max_detections` selected box indices, best first.
fn nms_single_class(
    scores: &[f32],
    boxes: &[Corners],
    o: &DetectionOptions,
    max_detections: usize,
) -> Vec<usize> {
    let keep: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i] >= o.nms_score_threshold)
        .collect();
    let mut order = keep.clone();
    // Rust's sort_by is stable, as TFLite's std::stable_sort.
    order.sort_by(|&i, &j| {
        if scores[i] > scores[j] {
            std::cmp::Ordering::Less
        } else if scores[j] > scores[i] {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    let output_size = keep.len().min(max_detections);
    let mut active = vec![true; order.len()];
    let mut active_count = order.len();
    let mut selected = Vec::with_capacity(output_size);
    for i in 0..order.len() {
        if active_count == 0 || selected.len() >= output_size {
            break;
        }
        if !active[i] {
            continue;
        }
        selected.push(order[i]);
        active[i] = false;
        active_count -= 1;
        for j in i + 1..order.len() {
            if active[j] && iou(&boxes[order[i]], &boxes[order[j]]) > o.nms_iou_threshold {
                active[j] = false;
                active_count -= 1;
            }
        }
    }
    selected
}

/// The first `k` of `0..values.len()` by decreasing value, in the order TFLite's
/// `DecreasingPartialArgSort` leaves them: the first maximum for `k == 1`, else libstdc++'s
/// `std::partial_sort` (a heap select, then a heap sort), whose order among equal values this
/// repeats step for step.
fn partial_arg_sort(values: &[f32], k: usize) -> Vec<usize> {
    if k == 1 {
        let mut best = 0;
        for i in 1..values.len() {
            if values[i] > values[best] {
                best = i;
            }
        }
        return vec![best];
    }
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let comp = |a: usize, b: usize| values[a] > values[b];
    // __heap_select: a heap of the first k, each later element that beats its top replacing it.
    make_heap(&mut idx[..k], &comp);
    for i in k..idx.len() {
        if comp(idx[i], idx[0]) {
            let v = idx[i];
            idx[i] = idx[0];
            adjust_heap(&mut idx[..k], 0, v, &comp);
        }
    }
    // __sort_heap.
    let mut last = k;
    while last > 1 {
        last -= 1;
        let v = idx[last];
        idx[last] = idx[0];
        adjust_heap(&mut idx[..last], 0, v, &comp);
    }
    idx.truncate(k);
    idx
}

/// libstdc++'s `std::make_heap`.
fn make_heap(h: &mut [usize], comp: &impl Fn(usize, usize) -> bool) {
    let len = h.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let v = h[parent];
        adjust_heap(h, parent, v, comp);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

/// libstdc++'s `__adjust_heap`: sifts the hole at `hole` down to a leaf, then pushes `value`
/// up from there.
fn adjust_heap(
    h: &mut [usize],
    mut hole: usize,
    value: usize,
    comp: &impl Fn(usize, usize) -> bool,
) {
    let len = h.len();
    let top = hole;
    let mut child = hole;
    while child < (len.saturating_sub(1)) / 2 {
        child = 2 * (child + 1);
        if comp(h[child], h[child - 1]) {
            child -= 1;
        }
        h[hole] = h[child];
        hole = child;
    }
    if len & 1 == 0 && len >= 2 && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        h[hole] = h[child - 1];
        hole = child - 1;
    }
    // __push_heap.
    while hole > top {
        let parent = (hole - 1) / 2;
        if !comp(h[parent], value) {
            break;
        }
        h[hole] = h[parent];
        hole = parent;
    }
    h[hole] = value;
}

/// TFLite's `TFLite_Detection_PostProcess` for batch 1. `boxes` holds `[A, box_len]` encodings
/// (`box_len >= 4`), `scores` `[A, classes_with_background]` (one more than
/// `num_classes` when a background class leads), `anchors` `[A, 4]` reals. The caller has checked
/// the shapes, the options' ranges and that every anchor's height and width are at least 0
/// (which TFLite checks at each run, through the decoded boxes).
pub fn detection_postprocess(
    boxes: DetectionInput,
    box_len: usize,
    scores: DetectionInput,
    classes_with_background: usize,
    anchors: &[f32],
    o: &DetectionOptions,
) -> Detections {
    let a = anchors.len() / 4;
    let decoded = decode(boxes, box_len, anchors, o);
    let real_scores: Vec<f32> = (0..a * classes_with_background)
        .map(|i| scores.real(i))
        .collect();
    let label_offset = classes_with_background - o.num_classes;
    let n = o.output_len();
    let mut out = Detections {
        boxes: vec![0.0; 4 * n],
        classes: vec![0.0; n],
        scores: vec![0.0; n],
        count: 0.0,
    };
    let mut put = |at: usize, b: &Corners, class: usize, score: f32| {
        out.boxes[4 * at..4 * at + 4].copy_from_slice(&[b.ymin, b.xmin, b.ymax, b.xmax]);
        out.classes[at] = class as f32;
        out.scores[at] = score;
    };
    let row = |r: usize| {
        &real_scores[r * classes_with_background + label_offset..(r + 1) * classes_with_background]
    };
    let count = if o.use_regular_nms {
        // Per class NMS; the selections merged into one list by decreasing score, earlier
        // classes first among equal scores (a stable merge), cut to max_detections each time.
        let per_class = o.detections_per_class.min(o.max_detections);
        let mut merged: Vec<(f32, usize, usize)> = Vec::with_capacity(2 * o.max_detections);
        let mut class_scores = vec![0.0f32; a];
        for class in 0..o.num_classes {
            for (r, s) in class_scores.iter_mut().enumerate() {
                *s = row(r)[class];
            }
            let selected = nms_single_class(&class_scores, &decoded, o, per_class);
            if selected.is_empty() {
                continue;
            }
            let mut fresh = selected
                .iter()
                .map(|&r| (class_scores[r], r, class))
                .peekable();
            let mut next = Vec::with_capacity(merged.len() + selected.len());
            let mut old = merged.into_iter().peekable();
            loop {
                let take_fresh = match (old.peek(), fresh.peek()) {
                    (Some(p), Some(q)) => q.0 > p.0,
                    (None, Some(_)) => true,
                    (_, None) => false,
                };
                match if take_fresh { fresh.next() } else { old.next() } {
                    Some(e) => next.push(e),
                    None => break,
                }
            }
            next.truncate(o.max_detections);
            merged = next;
        }
        for (at, &(score, r, class)) in merged.iter().enumerate() {
            put(at, &decoded[r], class, score);
        }
        merged.len()
    } else {
        // Fast NMS: each anchor's best classes, NMS on each anchor's top score.
        let per_anchor = o.max_classes_per_detection.min(o.num_classes);
        let mut top: Vec<Vec<usize>> = Vec::with_capacity(a);
        let max_scores: Vec<f32> = (0..a)
            .map(|r| {
                let order = partial_arg_sort(row(r), per_anchor);
                let best = row(r)[order[0]];
                top.push(order);
                best
            })
            .collect();
        let selected = nms_single_class(&max_scores, &decoded, o, o.max_detections);
        for (k, &r) in selected.iter().enumerate() {
            for (col, &class) in top[r].iter().enumerate() {
                put(
                    o.max_classes_per_detection * k + col,
                    &decoded[r],
                    class,
                    row(r)[class],
                );
            }
        }
        selected.len()
    };
    out.count = count as f32;
    out
}
