//! Reference SPACE_TO_BATCH_ND, BATCH_TO_SPACE_ND and DEPTH_TO_SPACE on NHWC tensors, as TFLite's
//! reference kernels move them (docs/spec.md §11.14, §11.15): pure data movement, generic over
//! the element so the float executor moves reals with them; input and output share `(S, Z)`, and
//! space-to-batch's padding holds the pad value (the zero point for codes).

fn check_len(op: &str, what: &str, len: usize, shape: [usize; 4]) {
    assert_eq!(
        len,
        shape.iter().product::<usize>(),
        "{op}: {what} holds {len} elements but its shape is {shape:?}"
    );
}

/// Output image `b = (sy * block_w + sx) * N + n` holds the pixels of input image `n` at rows
/// `y * block_h + sy - pad_top` and columns `x * block_w + sx - pad_left`; positions in the
/// padding hold `pad`. `output_shape` is `[N * block_h * block_w, (H + pads) / block_h,
/// (W + pads) / block_w, C]`.
pub fn space_to_batch<T: Copy>(
    input: &[T],
    input_shape: [usize; 4],
    block: [usize; 2],
    pad_top_left: [usize; 2],
    pad: T,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [n, h, w, c] = input_shape;
    let [ob, oh, ow, oc] = output_shape;
    check_len("space_to_batch", "input", input.len(), input_shape);
    check_len("space_to_batch", "output", output.len(), output_shape);
    assert!(
        block[0] >= 1 && block[1] >= 1 && ob == n * block[0] * block[1] && oc == c,
        "space_to_batch: output {output_shape:?} does not match input {input_shape:?} and block {block:?}"
    );
    let [top, left] = pad_top_left;
    for b in 0..ob {
        let image = b % n;
        let shift = b / n;
        let (sy, sx) = (shift / block[1], shift % block[1]);
        for y in 0..oh {
            let iy = (y * block[0] + sy).checked_sub(top).filter(|&v| v < h);
            for x in 0..ow {
                let ix = (x * block[1] + sx).checked_sub(left).filter(|&v| v < w);
                let out = &mut output[((b * oh + y) * ow + x) * c..][..c];
                match (iy, ix) {
                    (Some(iy), Some(ix)) => {
                        out.copy_from_slice(&input[((image * h + iy) * w + ix) * c..][..c])
                    }
                    _ => out.fill(pad),
                }
            }
        }
    }
}

/// The inverse movement: input image `b = (sy * block_w + sx) * N + n` goes to output image `n`
/// at rows `y * block_h + sy - crop_top` and columns `x * block_w + sx - crop_left`; what falls
/// outside the output is cropped. `output_shape` is `[N, H * block_h - crops,
/// W * block_w - crops, C]` with `N = input batches / (block_h * block_w)`.
pub fn batch_to_space<T: Copy>(
    input: &[T],
    input_shape: [usize; 4],
    block: [usize; 2],
    crop_top_left: [usize; 2],
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [ib, h, w, c] = input_shape;
    let [n, oh, ow, oc] = output_shape;
    check_len("batch_to_space", "input", input.len(), input_shape);
    check_len("batch_to_space", "output", output.len(), output_shape);
    assert!(
        block[0] >= 1 && block[1] >= 1 && ib == n * block[0] * block[1] && oc == c,
        "batch_to_space: output {output_shape:?} does not match input {input_shape:?} and block {block:?}"
    );
    let [top, left] = crop_top_left;
    for b in 0..ib {
        let image = b % n;
        let shift = b / n;
        let (sy, sx) = (shift / block[1], shift % block[1]);
        for y in 0..h {
            let Some(oy) = (y * block[0] + sy).checked_sub(top).filter(|&v| v < oh) else {
                continue;
            };
            for x in 0..w {
                let Some(ox) = (x * block[1] + sx).checked_sub(left).filter(|&v| v < ow) else {
                    continue;
                };
                output[((image * oh + oy) * ow + ox) * c..][..c]
                    .copy_from_slice(&input[((b * h + y) * w + x) * c..][..c]);
            }
        }
    }
}

/// Output pixel `(y, x)`, channel `d` is input pixel `(y / block, x / block)`, channel
/// `((y % block) * block + x % block) * C_out + d`; the output is
/// `[N, H * block, W * block, C / block^2]`.
pub fn depth_to_space<T: Copy>(
    input: &[T],
    input_shape: [usize; 4],
    block: usize,
    output: &mut [T],
    output_shape: [usize; 4],
) {
    let [n, h, w, c] = input_shape;
    let [on, oh, ow, oc] = output_shape;
    check_len("depth_to_space", "input", input.len(), input_shape);
    check_len("depth_to_space", "output", output.len(), output_shape);
    assert!(
        block >= 1 && on == n && oh == h * block && ow == w * block && oc * block * block == c,
        "depth_to_space: output {output_shape:?} does not match input {input_shape:?} and block {block}"
    );
    for b in 0..n {
        for y in 0..oh {
            for x in 0..ow {
                let d0 = ((y % block) * block + x % block) * oc;
                let src = ((b * h + y / block) * w + x / block) * c + d0;
                output[((b * oh + y) * ow + x) * oc..][..oc].copy_from_slice(&input[src..][..oc]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_to_batch_pads_with_the_pad_value_and_batch_to_space_inverts_it() {
        // [2, 3, 3, 1], block 2x2, padding top 1 bottom 0, left 0 right 1 -> [8, 2, 2, 1].
        let x: Vec<i8> = (0..18).collect();
        let mut y = vec![0i8; 8 * 2 * 2];
        space_to_batch(&x, [2, 3, 3, 1], [2, 2], [1, 0], -128, &mut y, [8, 2, 2, 1]);
        // Output image 0 (shift 0, 0) of image 0: padded rows 0, 2 -> input row -1 (pad), 1;
        // columns 0, 2.
        assert_eq!(&y[..4], &[-128, -128, 3, 5]);
        // Output image 3 (shift 0, 1) of image 1: rows -1, 1; columns 1, 3 (pad).
        assert_eq!(&y[12..16], &[-128, -128, 13, -128]);
        // Output image 4 (shift (1, 0) of image 0): rows 0, 2; columns 0, 2.
        assert_eq!(&y[16..20], &[0, 2, 6, 8]);
        // Cropping the same amounts recovers the input.
        let mut back = vec![0i8; 18];
        batch_to_space(&y, [8, 2, 2, 1], [2, 2], [1, 0], &mut back, [2, 3, 3, 1]);
        assert_eq!(back, x);
    }

    #[test]
    fn depth_to_space_spreads_channels_over_blocks() {
        // [1, 1, 2, 8] with block 2 -> [1, 2, 4, 2].
        let x: Vec<u8> = (0..16).collect();
        let mut y = vec![0u8; 16];
        depth_to_space(&x, [1, 1, 2, 8], 2, &mut y, [1, 2, 4, 2]);
        assert_eq!(y, [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]);
    }
}
