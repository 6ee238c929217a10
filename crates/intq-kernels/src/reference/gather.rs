//! Reference GATHER with constant indices, as TFLite's reference kernel moves codes
//! (docs/spec.md §11.17): pure data movement (generic over the element, so the float
//! executor moves reals with it), input and output share `(S, Z)`.

/// `output[o, j, i] = input[o, indices[j], i]`, with `o` running over the axes before `axis`, `j`
/// over the indices (flattened) and `i` over the axes after `axis`. Every index must be below
/// `input_shape[axis]` (the graph checks this at load).
pub fn gather<T: Copy>(
    input: &[T],
    input_shape: &[usize],
    axis: usize,
    indices: &[usize],
    output: &mut [T],
) {
    assert!(axis < input_shape.len(), "gather: axis outside the rank");
    assert_eq!(
        input.len(),
        input_shape.iter().product::<usize>(),
        "gather: input length"
    );
    let outer: usize = input_shape[..axis].iter().product();
    let inner: usize = input_shape[axis + 1..].iter().product();
    let n = input_shape[axis];
    assert!(
        indices.iter().all(|&j| j < n),
        "gather: an index is outside the axis"
    );
    assert_eq!(
        output.len(),
        outer * indices.len() * inner,
        "gather: output length"
    );
    for o in 0..outer {
        for (k, &j) in indices.iter().enumerate() {
            let from = (o * n + j) * inner;
            let to = (o * indices.len() + k) * inner;
            output[to..to + inner].copy_from_slice(&input[from..from + inner]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_columns_and_repeats() {
        // [3, 4]: rows 2, 0, 2.
        let x: Vec<u8> = (0..12).collect();
        let mut y = vec![0u8; 12];
        gather(&x, &[3, 4], 0, &[2, 0, 2], &mut y);
        assert_eq!(y, [8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11]);
        // Columns 3 and 1 of every row.
        let mut y = vec![0u8; 6];
        gather(&x, &[3, 4], 1, &[3, 1], &mut y);
        assert_eq!(y, [3, 1, 7, 5, 11, 9]);
        // The middle axis of an odd [1, 3, 5] int8 tensor.
        let x: Vec<i8> = (-7..8).collect();
        let mut y = vec![0i8; 5];
        gather(&x, &[1, 3, 5], 1, &[1], &mut y);
        assert_eq!(y, [-2, -1, 0, 1, 2]);
    }
}
