#!/usr/bin/env python3
"""Writes the hostile `.npy` corpus (crates/intq-cli/tests/hostile_npy/), byte by byte.

No numpy needed: each file is built from the .npy format description (magic, version, header
length, a Python-literal dict header padded to 64 bytes, raw data), with one defect. Run from the
repository root, then `cargo test -p intq-cli --test hostile_npy`.
"""
import os
import struct

OUT = os.path.join("crates", "intq-cli", "tests", "hostile_npy")


def npy(header, data=b"", version=(1, 0), header_len=None, magic=b"\x93NUMPY"):
    h = header.encode("latin-1") if isinstance(header, str) else header
    lenfmt = "<H" if version[0] == 1 else "<I"
    pre = len(magic) + 2 + struct.calcsize(lenfmt)
    total = (pre + len(h) + 1 + 63) // 64 * 64
    h = h + b" " * (total - pre - len(h) - 1) + b"\n"
    n = len(h) if header_len is None else header_len
    return magic + bytes(version) + struct.pack(lenfmt, n) + h + data


def hdr(descr="|u1", fortran="False", shape="(2, 3)"):
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


def cases():
    yield "valid_u8.npy", npy(hdr(), bytes(range(6)))
    yield "valid_f32_v2.npy", npy(hdr("<f4", shape="(3,)"), struct.pack("<3f", 1.5, -0.0, 1e30), version=(2, 0))
    yield "valid_scalar_i32.npy", npy(hdr("<i4", shape="()"), struct.pack("<i", -5))
    yield "empty.npy", b""
    yield "bad_magic.npy", npy(hdr(), bytes(6), magic=b"\x93NUMPZ")
    yield "version_9.npy", npy(hdr(), bytes(6), version=(9, 0))
    yield "header_length_past_end.npy", npy(hdr(), bytes(6), header_len=60000)
    yield "header_length_huge_v2.npy", npy(hdr(), bytes(6), version=(2, 0), header_len=0xFFFFFFF0)
    yield "header_not_a_dict.npy", npy("[1, 2, 3]", bytes(6))
    yield "header_missing_shape.npy", npy("{'descr': '|u1', 'fortran_order': False, }", bytes(6))
    yield "header_not_latin1_ascii.npy", npy(b"{'descr': '\xff\xfe', 'fortran_order': False, 'shape': (2, 3), }", bytes(6))
    yield "big_endian_f32.npy", npy(hdr(">f4", shape="(1,)"), bytes(4))
    yield "float64.npy", npy(hdr("<f8", shape="(1,)"), bytes(8))
    yield "object_dtype.npy", npy(hdr("|O", shape="(1,)"), bytes(8))
    yield "fortran_order.npy", npy(hdr(fortran="True"), bytes(6))
    yield "negative_dim.npy", npy(hdr(shape="(-1, 3)"), bytes(6))
    yield "dims_product_overflows.npy", npy(hdr(shape="(4294967296, 4294967296, 16)"), bytes(6))
    yield "dim_not_an_integer.npy", npy(hdr(shape="(2.5, 3)"), bytes(6))
    yield "data_truncated.npy", npy(hdr(), bytes(5))
    yield "data_longer_than_shape.npy", npy(hdr(), bytes(7))
    yield "huge_shape_tiny_file.npy", npy(hdr("<f4", shape="(100000, 100000)"), bytes(16))
    # Parsed naively, nested brackets cost time exponential in their depth.
    yield "header_nested_brackets.npy", npy(hdr(shape="(2, 3)" + ", 'x': " + "[" * 40 + "]" * 40), bytes(6))
    yield "header_too_long_v2.npy", npy(hdr() + " " * 8000, bytes(6), version=(2, 0))


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        if name.endswith(".npy"):
            os.remove(os.path.join(OUT, name))
    n = 0
    for name, data in cases():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        n += 1
    print(f"wrote {n} files to {OUT}")


if __name__ == "__main__":
    main()
