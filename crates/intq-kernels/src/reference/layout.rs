//! Reference TRANSPOSE and (strided) SLICE on codes, as TFLite's reference kernels move them
//! (docs/spec.md §11.10, §11.11): pure data movement (generic over the element, so the float
//! executor moves reals with them), input and output share `(S, Z)`.

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(output index, input index)` for every element of an output of `out_shape` whose axis
/// `a` steps the input by `step[a]` elements from `base`.
fn walk(out_shape: &[usize], base: usize, step: &[usize], mut f: impl FnMut(usize, usize)) {
    let rank = out_shape.len();
    if out_shape.contains(&0) {
        return;
    }
    let mut index = vec![0usize; rank];
    let mut at = base;
    let total: usize = out_shape.iter().product();
    for o in 0..total {
        f(o, at);
        for d in (0..rank).rev() {
            index[d] += 1;
            at += step[d];
            if index[d] < out_shape[d] {
                break;
            }
            at -= step[d] * out_shape[d];
            index[d] = 0;
        }
    }
}

/// `output[i_0, .., i_k] = input[j]` with `j[perm[a]] = i_a`: the output's axis `a` is the input's
/// axis `perm[a]` (TFLite's TRANSPOSE).
pub fn transpose<T: Copy>(input: &[T], input_shape: &[usize], perm: &[usize], output: &mut [T]) {
    assert_eq!(
        perm.len(),
        input_shape.len(),
        "transpose: one axis per input axis"
    );
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "input length"
    );
    assert_eq!(output.len(), input.len(), "output length");
    let s = strides(input_shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| input_shape[p]).collect();
    let step: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    walk(&out_shape, 0, &step, |o, i| output[o] = input[i]);
}

/// `output[i] = input[begin + i * stride]` per axis (TFLite's SLICE with unit strides, and
/// STRIDED_SLICE with positive strides once its masks are resolved); `output_shape` is the
/// number of elements taken per axis.
pub fn strided_slice<T: Copy>(
    input: &[T],
    input_shape: &[usize],
    begin: &[usize],
    stride: &[usize],
    output: &mut [T],
    output_shape: &[usize],
) {
    let rank = input_shape.len();
    assert!(
        begin.len() == rank && stride.len() == rank && output_shape.len() == rank,
        "slice: one begin, stride and size per axis"
    );
    for a in 0..rank {
        assert!(
            output_shape[a] == 0 || begin[a] + (output_shape[a] - 1) * stride[a] < input_shape[a],
            "slice: axis {a} reads past the input"
        );
    }
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "input length"
    );
    assert_eq!(
        output.len(),
        output_shape.iter().product::<usize>(),
        "output length"
    );
    let s = strides(input_shape);
    let base: usize = (0..rank).map(|a| begin[a] * s[a]).sum();
    let step: Vec<usize> = (0..rank).map(|a| stride[a] * s[a]).collect();
    walk(output_shape, base, &step, |o, i| output[o] = input[i]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_axes() {
        // [2, 3] -> [3, 2].
        let x: Vec<u8> = (0..6).collect();
        let mut y = vec![0u8; 6];
        transpose(&x, &[2, 3], &[1, 0], &mut y);
        assert_eq!(y, [0, 3, 1, 4, 2, 5]);
        // NHWC -> NCHW of a [1, 2, 2, 3] tensor.
        let x: Vec<i8> = (0..12).collect();
        let mut y = vec![0i8; 12];
        transpose(&x, &[1, 2, 2, 3], &[0, 3, 1, 2], &mut y);
        assert_eq!(y, [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]);
    }

    #[test]
    fn slices_with_strides() {
        // [4, 5]: rows 1.. step 2, columns 0.. step 3 -> [2, 2].
        let x: Vec<u8> = (0..20).collect();
        let mut y = vec![0u8; 4];
        strided_slice(&x, &[4, 5], &[1, 0], &[2, 3], &mut y, &[2, 2]);
        assert_eq!(y, [5, 8, 15, 18]);
        let mut y = vec![0u8; 3];
        strided_slice(&x, &[4, 5], &[2, 1], &[1, 1], &mut y, &[1, 3]);
        assert_eq!(y, [11, 12, 13]);
    }
}
