//! Spatial geometry shared by convolution and pooling: padding modes, output sizes, and the
//! resolved per-op parameters the kernels take.

/// How a spatial op pads its input, as TFLite and TensorFlow define the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// Output size `ceil(in / stride)`; the padding needed is split with the extra row/column at
    /// the bottom/right.
    Same,
    /// No padding: output size `floor((in - effective_filter) / stride) + 1`.
    Valid,
    /// Explicit amounts, in input pixels.
    Explicit {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
    },
}

/// Resolved padding of one spatial op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PaddingValues {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// The output extent and padding `(out, before, after)` along one spatial axis, or `None` when
    /// the filter does not fit (or a stride/dilation/filter size is zero).
    pub fn resolve_axis(
        self,
        input: usize,
        filter: usize,
        stride: usize,
        dilation: usize,
        explicit: (usize, usize),
    ) -> Option<(usize, usize, usize)> {
        if stride == 0 || dilation == 0 || filter == 0 || input == 0 {
            return None;
        }
        let effective = (filter - 1).checked_mul(dilation)?.checked_add(1)?;
        match self {
            Padding::Valid => {
                if effective > input {
                    return None;
                }
                Some(((input - effective) / stride + 1, 0, 0))
            }
            Padding::Same => {
                let out = input.div_ceil(stride);
                let needed = ((out - 1) * stride + effective).saturating_sub(input);
                Some((out, needed / 2, needed - needed / 2))
            }
            Padding::Explicit { .. } => {
                let (before, after) = explicit;
                let padded = input.checked_add(before)?.checked_add(after)?;
                if effective > padded {
                    return None;
                }
                Some(((padded - effective) / stride + 1, before, after))
            }
        }
    }

    /// Output `(height, width)` and resolved padding for an input of `(h, w)` and a filter of
    /// `(kh, kw)`.
    pub fn resolve(
        self,
        input: (usize, usize),
        filter: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> Option<((usize, usize), PaddingValues)> {
        let (ev, eh) = match self {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => ((top, bottom), (left, right)),
            _ => ((0, 0), (0, 0)),
        };
        let (oh, top, bottom) = self.resolve_axis(input.0, filter.0, stride.0, dilation.0, ev)?;
        let (ow, left, right) = self.resolve_axis(input.1, filter.1, stride.1, dilation.1, eh)?;
        Some((
            (oh, ow),
            PaddingValues {
                top,
                bottom,
                left,
                right,
            },
        ))
    }
}

/// Resolved geometry of a (depthwise) convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvParams {
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    /// Only `top` and `left` move the window; `bottom`/`right` are implied by the output shape.
    pub padding: PaddingValues,
}

/// Resolved geometry and fused clamp of a pooling op. Input and output share `(S, Z)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolParams {
    pub filter_h: usize,
    pub filter_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub padding: PaddingValues,
    pub clamp_min: i32,
    pub clamp_max: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tflite() {
        // in 5, filter 3, stride 2: out 3, total pad (3-1)*2+3-5 = 2 -> 1/1.
        assert_eq!(
            Padding::Same.resolve_axis(5, 3, 2, 1, (0, 0)),
            Some((3, 1, 1))
        );
        // in 4, filter 3, stride 2: out 2, total pad 1 -> 0 before, 1 after.
        assert_eq!(
            Padding::Same.resolve_axis(4, 3, 2, 1, (0, 0)),
            Some((2, 0, 1))
        );
        // dilation 2 makes a 3-tap filter span 5.
        assert_eq!(
            Padding::Same.resolve_axis(7, 3, 1, 2, (0, 0)),
            Some((7, 2, 2))
        );
        // filter 1 never pads.
        assert_eq!(
            Padding::Same.resolve_axis(7, 1, 3, 1, (0, 0)),
            Some((3, 0, 0))
        );
    }

    #[test]
    fn valid_and_explicit() {
        assert_eq!(
            Padding::Valid.resolve_axis(5, 3, 2, 1, (0, 0)),
            Some((2, 0, 0))
        );
        assert_eq!(Padding::Valid.resolve_axis(2, 3, 1, 1, (0, 0)), None);
        assert_eq!(Padding::Valid.resolve_axis(5, 3, 1, 3, (0, 0)), None);
        let e = Padding::Explicit {
            top: 1,
            bottom: 2,
            left: 0,
            right: 0,
        };
        assert_eq!(e.resolve_axis(4, 3, 1, 1, (1, 2)), Some((5, 1, 2)));
        assert_eq!(Padding::Same.resolve_axis(4, 3, 0, 1, (0, 0)), None);
    }
}
