#!/usr/bin/env python3
"""Writes the hostile `.intq` corpus (crates/intq-engine/tests/hostile/) from docs/format.md.

The encoder here is independent of the Rust writer on purpose: each file is a well-formed model
with one deliberate defect, so the test that loads them checks the reader's and validator's
refusals, not a round trip through the same code. Run from the repository root:

    python3 tools/hostile/make_intq_corpus.py

then `cargo test -p intq-engine --test hostile` to compare the errors with EXPECTED.txt.
"""
import os
import struct
import zlib

OUT = os.path.join("crates", "intq-engine", "tests", "hostile")
MAGIC = b"\x89INTQ\r\n\x1a"
U8, I8, I32, F32 = 0, 1, 2, 3
NO_TENSOR = 0xFFFFFFFF


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def f32(v):
    return struct.pack("<f", v)


def i32(v):
    return struct.pack("<i", v)


def f32_bits(bits):
    return struct.pack("<I", bits)


class Model:
    """Tensors and ops as plain records; `encode` lays them out as docs/format.md says."""

    def __init__(self):
        self.tensors = []  # dict(name, dtype, dims, quant bytes, quant tag, data)
        self.inputs = []
        self.outputs = []
        self.ops = []  # (tag, body bytes)

    def tensor(self, name, dtype, dims, quant=None, data=None):
        # quant: None, ("pt", scale_bytes, zp) or ("pc", axis, [scale bytes], [zps])
        self.tensors.append(dict(name=name, dtype=dtype, dims=dims, quant=quant, data=data))
        return len(self.tensors) - 1

    def op(self, tag, body):
        self.ops.append((tag, body))

    def _quant(self, q):
        if q is None:
            return 0, b""
        if q[0] == "pt":
            return 1, q[1] + i32(q[2])
        _, axis, scales, zps = q
        return 2, u64(axis) + u32(len(scales)) + b"".join(scales) + b"".join(i32(z) for z in zps)

    def encode(self, major=1, minor=0):
        meta_len = 4
        records = []
        for t in self.tensors:
            tag, qb = self._quant(t["quant"])
            head = u32(len(t["name"])) + t["name"] + bytes([t["dtype"], len(t["dims"]), tag,
                                                            1 if t["data"] is not None else 0])
            head += b"".join(u64(d) for d in t["dims"]) + qb
            records.append((head, t["data"]))
            meta_len += len(head) + (16 if t["data"] is not None else 0)
        meta_len += 4 + 4 * len(self.inputs) + 4 + 4 * len(self.outputs) + 4
        meta_len += sum(8 + len(b) for _, b in self.ops)
        # Data offsets follow the alignment rule.
        pos = 32 + meta_len
        placed = []
        for head, data in records:
            if data is not None:
                pos = (pos + 15) // 16 * 16
                placed.append((pos, len(data)))
                pos += len(data)
            else:
                placed.append(None)
        p = u32(len(self.tensors))
        for (head, data), where in zip(records, placed):
            p += head
            if where is not None:
                p += u64(where[0]) + u64(where[1])
        p += u32(len(self.inputs)) + b"".join(u32(i) for i in self.inputs)
        p += u32(len(self.outputs)) + b"".join(u32(i) for i in self.outputs)
        p += u32(len(self.ops))
        for tag, body in self.ops:
            p += u32(tag) + u32(len(body)) + body
        assert 32 + len(p) == 32 + meta_len
        for (head, data), where in zip(records, placed):
            if where is not None:
                p += b"\0" * (where[0] - 32 - len(p))
                p += data
        return header(p, major, minor) + p


def header(payload, major=1, minor=0, crc=None, length=None):
    crc = zlib.crc32(payload) if crc is None else crc
    length = len(payload) if length is None else length
    return MAGIC + struct.pack("<HH", major, minor) + u32(crc) + u64(length) + b"\0" * 8


def pair(h, w):
    return u64(h) + u64(w)


def conv_body(inp, filt, bias, out, padding=b"\x01", act=0):
    return u32(inp) + u32(filt) + u32(bias) + u32(out) + pair(1, 1) + pair(1, 1) + padding + bytes([act])


def conv_model(scale=f32(0.5), in_zp=3, out_dims=(1, 2, 2, 2), w_scale=f32(0.25), beta=None):
    """Quantize -> 1x1 Conv2d (2 output channels) -> Softmax, uint8 per-tensor."""
    m = Model()
    x = m.tensor(b"x", F32, [1, 2, 2, 1])
    q = m.tensor(b"q", U8, [1, 2, 2, 1], ("pt", scale, in_zp))
    w = m.tensor(b"w", U8, [2, 1, 1, 1], ("pt", w_scale, 128), bytes([130, 120]))
    b = m.tensor(b"b", I32, [2], None, i32(5) + i32(-7))
    y = m.tensor(b"y", U8, list(out_dims), ("pt", f32(1.0 / 16), 128))
    s = m.tensor(b"probs", U8, list(out_dims), ("pt", f32(1.0 / 256), 0))
    m.inputs, m.outputs = [x], [s]
    m.op(10, u32(x) + u32(q))
    m.op(0, conv_body(q, w, b, y))
    m.op(8, u32(y) + u32(s) + (f32(1.0) if beta is None else beta))
    return m


def refixed(data):
    """Header checksum and length made consistent with whatever payload `data` has."""
    payload = data[32:]
    return header(payload, *struct.unpack("<HH", data[8:12])) + payload


def cases():
    good = conv_model().encode()
    yield "valid.intq", good
    yield "empty.intq", b""
    yield "header_cut_at_20.intq", good[:20]
    # Truncation inside each section, with a header that agrees with the shorter payload so the
    # reader reaches the section itself.
    m = conv_model()
    meta = good
    yield "truncated_in_tensor_table.intq", refixed(meta[:32 + 40])
    yield "truncated_in_op_list.intq", refixed(meta[:len(meta) - 40 - 16])
    yield "truncated_in_constant_data.intq", refixed(meta[:-3])
    yield "payload_length_larger_than_file.intq", good[:16] + u64(len(good) - 32 + 1000) + good[24:]
    yield "bad_magic.intq", b"PK\x03\x04" + good[4:]
    yield "text_mode_mangled_magic.intq", good[:5] + b"\n" + good[7:]
    yield "major_version_2.intq", refixed(good[:8] + struct.pack("<HH", 2, 0) + good[12:])
    yield "reserved_bytes_set.intq", good[:24] + b"\x01" + good[25:]
    flipped = bytearray(good)
    flipped[100] ^= 0x40
    yield "checksum_mismatch.intq", bytes(flipped)
    yield "trailing_garbage.intq", refixed(good + b"\0" * 7)

    # Data placed past the end of the file (offset field rewritten).
    m = conv_model()
    enc = bytearray(m.encode())
    # 'w' record: after 'x' (4+1+4+32 = 41) and 'q' (4+1+4+32+8 = 49) at 36 + 41 + 49 = 126;
    # 41 + 8 quant = 49 bytes of head, then the offset.
    off = 126 + 4 + 1 + 4 + 32 + 8
    assert struct.unpack("<Q", enc[off:off + 8])[0] % 16 == 0
    enc[off:off + 8] = u64(1 << 40)
    yield "data_offset_past_end.intq", refixed(bytes(enc))
    enc = bytearray(m.encode())
    enc[off + 8:off + 16] = u64(1 << 62)
    yield "data_length_huge.intq", refixed(bytes(enc))

    # Shapes.
    m = Model()
    big = m.tensor(b"big", U8, [1 << 31, 1 << 31, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [big], [big]
    yield "dims_product_overflows.intq", m.encode()
    m = Model()
    t = m.tensor(b"deep", U8, [1] * 9, ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [t], [t]
    yield "rank_9.intq", m.encode()
    yield "conv_output_shape_disagrees.intq", conv_model(out_dims=(1, 3, 2, 2)).encode()

    # Quantization parameters.
    yield "zero_scale.intq", conv_model(scale=f32(0.0)).encode()
    yield "negative_scale.intq", conv_model(scale=f32(-0.5)).encode()
    yield "nan_scale.intq", conv_model(scale=f32_bits(0x7FC00001)).encode()
    yield "infinite_scale.intq", conv_model(scale=f32(float("inf"))).encode()
    yield "subnormal_weight_scale.intq", conv_model(w_scale=f32_bits(1)).encode()
    yield "zero_point_above_uint8.intq", conv_model(in_zp=256).encode()
    yield "zero_point_below_uint8.intq", conv_model(in_zp=-1).encode()
    yield "nan_softmax_beta.intq", conv_model(beta=f32_bits(0x7FC00000)).encode()
    yield "infinite_softmax_beta.intq", conv_model(beta=f32(float("-inf"))).encode()
    m = Model()
    x = m.tensor(b"x", U8, [1, 4], ("pt", f32(1.0), 0))
    w = m.tensor(b"w", I8, [2, 4], ("pc", 0, [f32(1.0)], [0]), bytes(8))
    y = m.tensor(b"y", U8, [1, 2], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [x], [y]
    m.op(2, u32(x) + u32(w) + u32(NO_TENSOR) + u32(y) + b"\0")
    yield "per_channel_count_disagrees.intq", m.encode()

    # Graph structure.
    m = Model()
    a = m.tensor(b"a", U8, [1, 4], ("pt", f32(1.0), 0))
    b_ = m.tensor(b"b", U8, [1, 4], ("pt", f32(1.0), 0))
    c = m.tensor(b"c", U8, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [c]
    m.op(3, u32(a) + u32(c) + u32(b_) + b"\0")  # b = a + c
    m.op(9, u32(b_) + u32(c))  # c = reshape(b): a cycle through b and c
    yield "cycle.intq", m.encode()
    m = Model()
    a = m.tensor(b"a", U8, [1, 4], ("pt", f32(1.0), 0))
    b_ = m.tensor(b"b", U8, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [b_]
    m.op(9, u32(a) + u32(b_))
    m.op(9, u32(a) + u32(b_))
    yield "two_producers.intq", m.encode()
    m = Model()
    a = m.tensor(b"a", U8, [1, 4], ("pt", f32(1.0), 0))
    b_ = m.tensor(b"b", U8, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [b_]
    yield "output_never_produced.intq", m.encode()
    m = Model()
    a = m.tensor(b"a", U8, [1, 4], ("pt", f32(1.0), 0))
    b_ = m.tensor(b"b", U8, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [b_]
    m.op(9, u32(a) + u32(7))
    yield "dangling_tensor_id.intq", m.encode()
    m.ops = [(42, u32(a) + u32(b_))]
    yield "unknown_op_tag.intq", m.encode()
    # Gather, Sum and ArgMax (1.5 tags 34, 35, 37) with an index, a flag or a type out of place.
    m = Model()
    x = m.tensor(b"x", U8, [1, 5], ("pt", f32(1.0), 0))
    y = m.tensor(b"y", U8, [1, 2], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [x], [y]
    # Gather: axis 1, indices [4, 5] on an axis of 5.
    m.op(34, u32(x) + u32(y) + u64(1) + u32(2) + u64(4) + u64(5))
    yield "gather_index_outside_axis.intq", m.encode()
    y = m.tensor(b"s", U8, [1], ("pt", f32(1.0), 0))
    m.outputs = [y]
    # Sum: axes [1], keep_dims byte 2.
    m.ops = [(35, u32(x) + u32(y) + u32(1) + u64(1) + b"\x02")]
    yield "sum_keep_dims_not_a_flag.intq", m.encode()
    # ArgMax along axis 1 into a uint8 tensor.
    m.ops = [(37, u32(x) + u32(y) + u64(1))]
    yield "arg_max_output_not_int32.intq", m.encode()
    m.ops = [(9, u32(a) + u32(b_) + u32(0))]
    yield "op_body_too_long.intq", m.encode()
    # Spatial ops (1.5 tags 29-32) whose shapes disagree with their parameters.
    m = Model()
    x = m.tensor(b"x", U8, [1, 2, 2, 1], ("pt", f32(1.0), 0))
    w = m.tensor(b"w", U8, [1, 3, 3, 1], ("pt", f32(1.0), 128), bytes(range(9)))
    y = m.tensor(b"y", U8, [1, 5, 5, 1], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [x], [y]
    # TransposeConv: input, filter, no bias, output, stride 2x2, SAME, no activation.
    m.op(29, u32(x) + u32(w) + u32(NO_TENSOR) + u32(y) + pair(2, 2) + b"\x00" + b"\x00")
    yield "transpose_conv_output_disagrees.intq", m.encode()
    m = Model()
    x = m.tensor(b"x", U8, [1, 3, 3, 1], ("pt", f32(1.0), 0))
    y = m.tensor(b"y", U8, [4, 1, 1, 1], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [x], [y]
    # SpaceToBatch: block 2x2, no padding, on a 3x3 image.
    m.op(30, u32(x) + u32(y) + pair(2, 2) + pair(0, 0) + pair(0, 0))
    yield "space_to_batch_block_does_not_divide.intq", m.encode()
    m = Model()
    x = m.tensor(b"x", U8, [1, 1, 1, 4], ("pt", f32(1.0), 0))
    y = m.tensor(b"y", U8, [1, 3, 3, 1], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [x], [y]
    # DepthToSpace: block 3 on 4 channels.
    m.op(32, u32(x) + u32(y) + u64(3))
    yield "depth_to_space_channels_not_square_multiple.intq", m.encode()
    # DetectionPostProcess (1.5 tag 33): float32 boxes [1, 2, 4] and scores [1, 2, 2], constant
    # anchors [2, 4] whose second row has a negative height, the boxes output [1, 1, 4].
    def detection(anchor_h, part):
        m = Model()
        b = m.tensor(b"boxes", F32, [1, 2, 4])
        c = m.tensor(b"scores", F32, [1, 2, 2])
        rows = [0.5, 0.5, 1.0, 1.0, 0.5, 1.5, anchor_h, 1.0]
        a = m.tensor(b"anchors", F32, [2, 4], None, b"".join(f32(v) for v in rows))
        y = m.tensor(b"detections", F32, [1, 1, 4])
        m.inputs, m.outputs = [b, c], [y]
        # Ids, part, max_detections 1, max_classes_per_detection 1, detections_per_class 100,
        # fast NMS, thresholds 0.5 and 0.5, 1 class, scales 10, 10, 5, 5.
        body = u32(b) + u32(c) + u32(a) + u32(y) + bytes([part]) + u64(1) + u64(1) + u64(100)
        body += b"\x00" + f32(0.5) + f32(0.5) + u64(1) + f32(10) + f32(10) + f32(5) + f32(5)
        m.op(33, body)
        return m.encode()
    yield "detection_anchor_height_negative.intq", detection(-0.25, 0)
    yield "detection_part_not_a_part.intq", detection(1.0, 4)
    m = Model()
    a = m.tensor(b"\xff\xfe", U8, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [a]
    yield "name_not_utf8.intq", m.encode()
    m = Model()
    a = m.tensor(b"a", 9, [1, 4], ("pt", f32(1.0), 0))
    m.inputs, m.outputs = [a], [a]
    yield "unknown_dtype.intq", m.encode()
    yield "tensor_count_huge.intq", refixed(header(b"") + u32(0xFFFFFFF0) + b"\0" * 12)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.endswith(".intq"):
            os.remove(os.path.join(OUT, name))
    n = 0
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print(f"wrote {n} files to {OUT}")


if __name__ == "__main__":
    main()
