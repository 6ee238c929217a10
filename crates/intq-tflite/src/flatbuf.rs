//! A minimal FlatBuffers reader and writer: just tables, scalars, vectors and strings, which is
//! all the `.tflite` schema subset needs. The reader checks every offset and length against the
//! buffer, so a malformed file is an error and never a panic or an allocation larger than the
//! file; the writer lays objects out front to back (children after parents), which keeps every
//! unsigned offset positive as the format requires.
//!
//! Why not the `flatbuffers` crate (or `planus`): both read and write through code generated
//! from TFLite's `schema.fbs` by a schema compiler (`flatc`, a C++ tool, or `planus-cli`), over
//! ten thousand lines for a schema of which intq uses a few dozen fields, regenerated with every
//! schema change. This file is the whole reader and writer, checks every offset as the crate's
//! verifier does, and is fuzzed (`fuzz/fuzz_targets/tflite.rs`).

use crate::TfliteError;

fn bad(msg: impl Into<String>) -> TfliteError {
    TfliteError::Malformed(msg.into())
}

/// The whole FlatBuffer.
#[derive(Clone, Copy)]
pub struct Buf<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Buf<'a> {
    fn slice(&self, at: usize, len: usize, what: &str) -> Result<&'a [u8], TfliteError> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| {
                bad(format!(
                    "{what} at byte {at} (length {len}) runs past the end of the {}-byte file",
                    self.bytes.len()
                ))
            })
    }
    fn u16(&self, at: usize, what: &str) -> Result<u16, TfliteError> {
        let s = self.slice(at, 2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&self, at: usize, what: &str) -> Result<u32, TfliteError> {
        let s = self.slice(at, 4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// Follows the unsigned offset stored at `at`.
    fn follow(&self, at: usize, what: &str) -> Result<usize, TfliteError> {
        let off = self.u32(at, what)? as usize;
        let target = at
            .checked_add(off)
            .filter(|&t| t < self.bytes.len())
            .ok_or_else(|| {
                bad(format!(
                    "{what}: offset {off} at byte {at} points outside the file"
                ))
            })?;
        Ok(target)
    }

    /// The root table.
    pub fn root(&self) -> Result<Table<'a>, TfliteError> {
        let at = self.follow(0, "root offset")?;
        Table::at(*self, at, "root table")
    }
}

/// A table: its position and its vtable.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
    table_len: usize,
}

impl<'a> Table<'a> {
    fn at(buf: Buf<'a>, pos: usize, what: &str) -> Result<Table<'a>, TfliteError> {
        let s = buf.slice(pos, 4, what)?;
        let soff = i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64;
        let vtable = pos as i64 - soff;
        if vtable < 0 || vtable as usize >= buf.bytes.len() {
            return Err(bad(format!(
                "{what} at byte {pos}: its vtable lies outside the file"
            )));
        }
        let vtable = vtable as usize;
        let vtable_len = buf.u16(vtable, what)? as usize;
        let table_len = buf.u16(vtable + 2, what)? as usize;
        if vtable_len < 4 || !vtable_len.is_multiple_of(2) {
            return Err(bad(format!(
                "{what} at byte {pos}: vtable size {vtable_len} is invalid"
            )));
        }
        buf.slice(vtable, vtable_len, what)?;
        buf.slice(pos, table_len.max(4), what)?;
        Ok(Table {
            buf,
            pos,
            vtable,
            vtable_len,
            table_len,
        })
    }

    /// The byte position of field `id`'s value, or `None` when absent.
    fn field(&self, id: u16, size: usize, what: &str) -> Result<Option<usize>, TfliteError> {
        let entry = 4 + 2 * id as usize;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = self.buf.u16(self.vtable + entry, what)? as usize;
        if off == 0 {
            return Ok(None);
        }
        if off + size > self.table_len {
            return Err(bad(format!(
                "{what}: field {id} at table offset {off} lies outside its {}-byte table",
                self.table_len
            )));
        }
        Ok(Some(self.pos + off))
    }

    fn scalar<const N: usize>(&self, id: u16, what: &str) -> Result<Option<[u8; N]>, TfliteError> {
        match self.field(id, N, what)? {
            None => Ok(None),
            Some(at) => {
                let s = self.buf.slice(at, N, what)?;
                let mut a = [0u8; N];
                a.copy_from_slice(s);
                Ok(Some(a))
            }
        }
    }

    pub fn u8(&self, id: u16, default: u8, what: &str) -> Result<u8, TfliteError> {
        Ok(self.scalar::<1>(id, what)?.map_or(default, |a| a[0]))
    }
    pub fn i8(&self, id: u16, default: i8, what: &str) -> Result<i8, TfliteError> {
        Ok(self.scalar::<1>(id, what)?.map_or(default, |a| a[0] as i8))
    }
    pub fn bool(&self, id: u16, what: &str) -> Result<bool, TfliteError> {
        Ok(self.u8(id, 0, what)? != 0)
    }
    pub fn i32(&self, id: u16, default: i32, what: &str) -> Result<i32, TfliteError> {
        Ok(self
            .scalar::<4>(id, what)?
            .map_or(default, i32::from_le_bytes))
    }
    pub fn u32(&self, id: u16, default: u32, what: &str) -> Result<u32, TfliteError> {
        Ok(self
            .scalar::<4>(id, what)?
            .map_or(default, u32::from_le_bytes))
    }
    pub fn f32(&self, id: u16, default: f32, what: &str) -> Result<f32, TfliteError> {
        Ok(self
            .scalar::<4>(id, what)?
            .map_or(default, f32::from_le_bytes))
    }
    pub fn u64(&self, id: u16, default: u64, what: &str) -> Result<u64, TfliteError> {
        Ok(self
            .scalar::<8>(id, what)?
            .map_or(default, u64::from_le_bytes))
    }

    fn target(&self, id: u16, what: &str) -> Result<Option<usize>, TfliteError> {
        match self.field(id, 4, what)? {
            None => Ok(None),
            Some(at) => Ok(Some(self.buf.follow(at, what)?)),
        }
    }

    pub fn table(&self, id: u16, what: &str) -> Result<Option<Table<'a>>, TfliteError> {
        match self.target(id, what)? {
            None => Ok(None),
            Some(at) => Ok(Some(Table::at(self.buf, at, what)?)),
        }
    }

    /// A vector of `elem`-byte elements: its element bytes.
    fn vector(&self, id: u16, elem: usize, what: &str) -> Result<Option<Vector<'a>>, TfliteError> {
        let Some(at) = self.target(id, what)? else {
            return Ok(None);
        };
        let len = self.buf.u32(at, what)? as usize;
        // The length is checked against the file before anything is allocated from it.
        let bytes = len
            .checked_mul(elem)
            .ok_or_else(|| bad(format!("{what}: vector length {len} overflows")))?;
        self.buf.slice(at + 4, bytes, what)?;
        Ok(Some(Vector {
            buf: self.buf,
            start: at + 4,
            len,
        }))
    }

    pub fn bytes(&self, id: u16, what: &str) -> Result<Option<&'a [u8]>, TfliteError> {
        match self.vector(id, 1, what)? {
            None => Ok(None),
            Some(v) => Ok(Some(self.buf.slice(v.start, v.len, what)?)),
        }
    }
    pub fn string(&self, id: u16, what: &str) -> Result<Option<String>, TfliteError> {
        Ok(self
            .bytes(id, what)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }
    pub fn i32s(&self, id: u16, what: &str) -> Result<Option<Vec<i32>>, TfliteError> {
        Ok(self.vector(id, 4, what)?.map(|v| {
            v.chunks(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }))
    }
    pub fn f32s(&self, id: u16, what: &str) -> Result<Option<Vec<f32>>, TfliteError> {
        Ok(self.vector(id, 4, what)?.map(|v| {
            v.chunks(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }))
    }
    pub fn i64s(&self, id: u16, what: &str) -> Result<Option<Vec<i64>>, TfliteError> {
        Ok(self.vector(id, 8, what)?.map(|v| {
            v.chunks(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect()
        }))
    }
    /// A vector of tables.
    pub fn tables(&self, id: u16, what: &str) -> Result<Vec<Table<'a>>, TfliteError> {
        let Some(v) = self.vector(id, 4, what)? else {
            return Ok(Vec::new());
        };
        (0..v.len)
            .map(|i| {
                let at = self.buf.follow(v.start + 4 * i, what)?;
                Table::at(self.buf, at, what)
            })
            .collect()
    }
}

struct Vector<'a> {
    buf: Buf<'a>,
    start: usize,
    len: usize,
}

impl<'a> Vector<'a> {
    fn chunks(&self, elem: usize) -> std::slice::ChunksExact<'a, u8> {
        self.buf.bytes[self.start..self.start + self.len * elem].chunks_exact(elem)
    }
}

// ---------------------------------------------------------------------------------------------
// Writer

/// A value to serialize: a table (fields by id), a vector or a string.
#[derive(Debug, Clone)]
pub enum Node {
    Table(Vec<(u16, Field)>),
    /// Bytes, with the alignment of the element data (TFLite aligns buffers to 16).
    Bytes(Vec<u8>, usize),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
    I64s(Vec<i64>),
    Str(String),
    Tables(Vec<Node>),
}

/// A table field: an inline scalar or an offset to another object.
#[derive(Debug, Clone)]
pub enum Field {
    U8(u8),
    I32(i32),
    U32(u32),
    F32(f32),
    Off(Node),
}

impl Field {
    fn size(&self) -> usize {
        match self {
            Field::U8(_) => 1,
            _ => 4,
        }
    }
}

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn align(&mut self, a: usize) {
        while !self.out.len().is_multiple_of(a) {
            self.out.push(0);
        }
    }
    fn put_u32_at(&mut self, at: usize, v: u32) {
        self.out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Writes a vector whose elements start aligned to `align`; returns the length field's
    /// position.
    fn vector(&mut self, len: usize, elems: &[u8], align: usize) -> usize {
        let align = align.max(4);
        // The length precedes the elements; pad so that the elements land aligned.
        while !(self.out.len() + 4).is_multiple_of(align) {
            self.out.push(0);
        }
        let at = self.out.len();
        self.out.extend_from_slice(&(len as u32).to_le_bytes());
        self.out.extend_from_slice(elems);
        at
    }

    /// Writes `node` and everything below it; returns the position offsets must point at.
    fn node(&mut self, node: &Node) -> usize {
        match node {
            Node::Bytes(b, align) => self.vector(b.len(), b, *align),
            Node::I32s(v) => {
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.vector(v.len(), &b, 4)
            }
            Node::F32s(v) => {
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.vector(v.len(), &b, 4)
            }
            Node::I64s(v) => {
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                self.vector(v.len(), &b, 8)
            }
            Node::Str(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                self.vector(s.len(), &b, 4)
            }
            Node::Tables(items) => {
                self.align(4);
                let at = self.out.len();
                self.out
                    .extend_from_slice(&(items.len() as u32).to_le_bytes());
                let slots: Vec<usize> = (0..items.len())
                    .map(|_| {
                        let s = self.out.len();
                        self.out.extend_from_slice(&[0; 4]);
                        s
                    })
                    .collect();
                for (slot, item) in slots.into_iter().zip(items) {
                    let target = self.node(item);
                    self.put_u32_at(slot, (target - slot) as u32);
                }
                at
            }
            Node::Table(fields) => self.table(fields),
        }
    }

    fn table(&mut self, fields: &[(u16, Field)]) -> usize {
        // Inline layout: the soffset, then fields largest first so each is naturally aligned.
        let mut order: Vec<&(u16, Field)> = fields.iter().collect();
        order.sort_by_key(|(id, f)| (std::cmp::Reverse(f.size()), *id));
        let mut offsets = Vec::with_capacity(order.len());
        let mut size = 4usize;
        for (id, f) in &order {
            offsets.push((*id, size));
            size += f.size();
        }
        let table_len = size;
        let max_id = fields
            .iter()
            .map(|(id, _)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        let vtable_len = 4 + 2 * max_id;
        let mut vtable = vec![0u16; 2 + max_id];
        vtable[0] = vtable_len as u16;
        vtable[1] = table_len as u16;
        for &(id, off) in &offsets {
            vtable[2 + id as usize] = off as u16;
        }
        // The vtable goes first, then the table aligned to 4.
        self.align(2);
        let vt = self.out.len();
        for v in vtable {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
        self.align(4);
        let pos = self.out.len();
        self.out
            .extend_from_slice(&((pos - vt) as i32).to_le_bytes());
        let mut pending = Vec::new();
        for (id, f) in &order {
            match f {
                Field::U8(v) => self.out.push(*v),
                Field::I32(v) => self.out.extend_from_slice(&v.to_le_bytes()),
                Field::U32(v) => self.out.extend_from_slice(&v.to_le_bytes()),
                Field::F32(v) => self.out.extend_from_slice(&v.to_le_bytes()),
                Field::Off(n) => {
                    pending.push((self.out.len(), n));
                    self.out.extend_from_slice(&[0; 4]);
                }
            }
            let _ = id;
        }
        for (slot, n) in pending {
            let target = self.node(n);
            self.put_u32_at(slot, (target - slot) as u32);
        }
        pos
    }
}

/// Serializes a root table with a 4-byte file identifier.
pub fn finish(root: &Node, identifier: &[u8; 4]) -> Vec<u8> {
    let mut w = Writer::default();
    w.out.extend_from_slice(&[0; 4]);
    w.out.extend_from_slice(identifier);
    let root_pos = w.node(root);
    w.put_u32_at(0, root_pos as u32);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_every_kind_of_field() {
        let inner = Node::Table(vec![
            (1, Field::I32(-7)),
            (0, Field::Off(Node::Str("hi".into()))),
        ]);
        let root = Node::Table(vec![
            (0, Field::U8(9)),
            (2, Field::F32(1.5)),
            (3, Field::Off(Node::I32s(vec![1, -2, 3]))),
            (4, Field::Off(Node::Tables(vec![inner.clone(), inner]))),
            (5, Field::Off(Node::Bytes(vec![1, 2, 3], 16))),
            (6, Field::Off(Node::I64s(vec![-5, 6]))),
            (7, Field::Off(Node::F32s(vec![0.25]))),
            (8, Field::U32(77)),
        ]);
        let bytes = finish(&root, b"TEST");
        let t = Buf { bytes: &bytes }.root().unwrap();
        assert_eq!(t.u8(0, 0, "a").unwrap(), 9);
        assert_eq!(t.i32(1, 42, "absent").unwrap(), 42);
        assert_eq!(t.f32(2, 0.0, "f").unwrap(), 1.5);
        assert_eq!(t.i32s(3, "v").unwrap().unwrap(), vec![1, -2, 3]);
        let items = t.tables(4, "tables").unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].i32(1, 0, "x").unwrap(), -7);
        assert_eq!(items[0].string(0, "s").unwrap().unwrap(), "hi");
        let data_at = {
            let b = t.bytes(5, "b").unwrap().unwrap();
            assert_eq!(b, &[1, 2, 3]);
            b.as_ptr() as usize - bytes.as_ptr() as usize
        };
        assert_eq!(data_at % 16, 0);
        assert_eq!(t.i64s(6, "l").unwrap().unwrap(), vec![-5, 6]);
        assert_eq!(t.f32s(7, "f").unwrap().unwrap(), vec![0.25]);
        assert_eq!(t.u32(8, 0, "u").unwrap(), 77);
        assert!(t.table(30, "absent").unwrap().is_none());
        assert_eq!(&bytes[4..8], b"TEST");
    }

    #[test]
    fn truncations_and_corruptions_are_errors() {
        let root = Node::Table(vec![
            (0, Field::Off(Node::I32s(vec![1, 2, 3, 4]))),
            (
                1,
                Field::Off(Node::Tables(vec![Node::Table(vec![(0, Field::I32(1))])])),
            ),
        ]);
        let bytes = finish(&root, b"TEST");
        let read_all = |b: &[u8]| -> Result<(), TfliteError> {
            let t = Buf { bytes: b }.root()?;
            t.i32s(0, "v")?;
            for x in t.tables(1, "t")? {
                x.i32(0, 0, "x")?;
            }
            Ok(())
        };
        read_all(&bytes).unwrap();
        for n in 0..bytes.len() {
            assert!(
                read_all(&bytes[..n]).is_err() || n >= bytes.len(),
                "prefix {n}"
            );
        }
        // Every single-byte corruption reads or fails, never panics.
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = read_all(&b);
            }
        }
        // A vector claiming 2^32-1 elements is refused before any allocation.
        let mut b = bytes.clone();
        let t = Buf { bytes: &bytes }.root().unwrap();
        let at = t.target(0, "v").unwrap().unwrap();
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_all(&b), Err(TfliteError::Malformed(_))));
    }
}
