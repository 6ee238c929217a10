//! A small, bounded reader for the Python pickles that hold numpy arrays (protocol 2, as written
//! by Python 2's cPickle: the classic `mnist.pkl.gz`), without Python or numpy.
//!
//! It runs the pickle virtual machine over an in-memory byte slice for the few opcodes such a
//! file uses, and understands exactly two callables: `numpy.core.multiarray._reconstruct` (an
//! empty ndarray that a BUILD then fills through `ndarray.__setstate__`) and `numpy.dtype`.
//! Anything else (other globals, unknown opcodes) is refused with an error, so a hostile pickle
//! can neither run code nor make it allocate more than its own length: every declared length is
//! checked against the bytes that remain, and the stack, the memo and tuple nesting are capped.
//!
//! Why not a crate: `serde-pickle` (the maintained Rust unpickler) reads these files with
//! `replace_unresolved_globals`, but it has no nesting limit: a 400 KB pickle of nested lists
//! overflows the stack and aborts the process, and it accepts any global as a stand-in. The
//! MNIST pickle comes from a package registry, so the reader must hold against hostile input;
//! this one needs only the opcodes an array pickle uses.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Most items the stack (or memo) may hold; real array pickles need a few dozen.
const MAX_ITEMS: usize = 1 << 16;

/// Deepest tuple nesting accepted; array pickles nest three or four levels.
const MAX_DEPTH: usize = 32;

/// A numpy dtype as far as this reader cares: kind/size code such as `f4`, `i8`, `u1`, and
/// byte order (`<`, `>`, `|`; `=` is resolved to little-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    pub code: String,
    pub byteorder: char,
}

impl Dtype {
    /// Bytes per element, from the code's digits (`f4` -> 4).
    pub fn itemsize(&self) -> Option<usize> {
        self.code
            .get(1..)?
            .parse()
            .ok()
            .filter(|&n| n > 0 && n <= 16)
    }
}

/// A numpy array decoded from the pickle: shape, dtype and its raw bytes (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray<'a> {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: &'a [u8],
}

impl NdArray<'_> {
    /// Elements as f32, when the dtype is little-endian `f4`.
    pub fn f32_values(&self) -> Option<impl Iterator<Item = f32> + '_> {
        (self.dtype.code == "f4" && self.dtype.byteorder == '<').then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        })
    }

    /// Elements as i64, for little-endian signed or unsigned integer dtypes of 1 to 8 bytes.
    pub fn int_values(&self) -> Option<Vec<i64>> {
        let size = self.dtype.itemsize()?;
        let signed = match self.dtype.code.as_bytes()[0] {
            b'i' => true,
            b'u' => false,
            _ => return None,
        };
        if !matches!(size, 1 | 2 | 4 | 8) || (size > 1 && self.dtype.byteorder != '<') {
            return None;
        }
        if !signed && size == 8 {
            // u8 values above i64::MAX would wrap; labels never need them.
            return None;
        }
        Some(
            self.data
                .chunks_exact(size)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..size].copy_from_slice(c);
                    let v = u64::from_le_bytes(b);
                    if signed && size < 8 && (v >> (size * 8 - 1)) & 1 == 1 {
                        (v | (!0u64 << (size * 8))) as i64
                    } else {
                        v as i64
                    }
                })
                .collect(),
        )
    }
}

/// A value the reader produced: what the stream unpickles to.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// A Python 2 `str` or Python 3 `bytes`: raw bytes borrowed from the input.
    Bytes(&'a [u8]),
    Tuple(Vec<Value<'a>>),
    /// A global reference that the reader allows (it is only called, never returned).
    Global(Callable),
    /// Objects built in place by BUILD; shared so a memoized reference sees the built state.
    Dtype(Rc<RefCell<Dtype>>),
    Array(Rc<RefCell<ArrayState<'a>>>),
    Mark,
}

/// The globals this reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callable {
    Reconstruct,
    NdarrayType,
    DtypeType,
}

/// An ndarray between `_reconstruct` (empty) and BUILD (filled).
#[derive(Debug, Clone, Default)]
pub struct ArrayState<'a> {
    pub built: Option<NdArray<'a>>,
}

impl<'a> Value<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::Global(_) => "global",
            Value::Dtype(_) => "dtype",
            Value::Array(_) => "ndarray",
            Value::Mark => "mark",
        }
    }

    /// Levels of tuple nesting: 0 for a scalar, 1 for a tuple of scalars. Bounded by
    /// [`MAX_DEPTH`] for every value the machine builds, so the recursion is too.
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(t) => 1 + t.iter().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The finished array, if this value is a built ndarray.
    pub fn as_array(&self) -> Option<NdArray<'a>> {
        match self {
            Value::Array(a) => a.borrow().built.clone(),
            _ => None,
        }
    }

    pub fn as_tuple(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Tuple(t) => Some(t),
            _ => None,
        }
    }
}

/// A pickle error: byte offset of the opcode at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    pub offset: usize,
    pub problem: String,
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    op_pos: usize,
    stack: Vec<Value<'a>>,
    memo: HashMap<u32, Value<'a>>,
}

/// Unpickles `input` (the decompressed stream) with the restricted machine described above.
pub fn unpickle(input: &[u8]) -> Result<Value<'_>, PickleError> {
    let mut m = Machine {
        input,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    m.run()
}

impl<'a> Machine<'a> {
    fn err<T>(&self, problem: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_pos,
            problem: problem.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let remaining = self.input.len() - self.pos;
        if n > remaining {
            return self.err(format!(
                "truncated: needs {n} more bytes, only {remaining} remain"
            ));
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        // Module and attribute names are short; a missing newline within 256 bytes is corruption.
        let rest = &self.input[self.pos..];
        let Some(n) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.err("GLOBAL name without a newline within 256 bytes");
        };
        let Ok(s) = std::str::from_utf8(&rest[..n]) else {
            return self.err("GLOBAL name is not UTF-8");
        };
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value<'a>) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_ITEMS {
            return self.err(format!("stack deeper than {MAX_ITEMS} items"));
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pushes a tuple of `items`, refusing nesting deeper than [`MAX_DEPTH`]: building, reading
    /// and dropping nested values recurses, so unbounded depth could overflow the thread's stack.
    fn push_tuple(&mut self, items: Vec<Value<'a>>) -> Result<(), PickleError> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return self.err(format!("tuples nested deeper than {MAX_DEPTH} levels"));
        }
        self.push(Value::Tuple(items))
    }

    fn pop(&mut self) -> Result<Value<'a>, PickleError> {
        match self.stack.pop() {
            Some(Value::Mark) => self.err("stack underflow: hit a MARK"),
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value<'a>>, PickleError> {
        if self.stack.len() < n
            || self.stack[self.stack.len() - n..]
                .iter()
                .any(|v| matches!(v, Value::Mark))
        {
            return self.err(format!("stack underflow: needs {n} items"));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value<'a>>, PickleError> {
        let Some(i) = self.stack.iter().rposition(|v| matches!(v, Value::Mark)) else {
            return self.err("no MARK on the stack");
        };
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&self) -> Result<&Value<'a>, PickleError> {
        match self.stack.last() {
            Some(Value::Mark) | None => self.err("stack underflow"),
            Some(v) => Ok(v),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        if self.memo.len() >= MAX_ITEMS && !self.memo.contains_key(&key) {
            return self.err(format!("memo larger than {MAX_ITEMS} entries"));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo key {key} was never stored")),
        }
    }

    fn run(&mut self) -> Result<Value<'a>, PickleError> {
        loop {
            self.op_pos = self.pos;
            let op = match self.u8() {
                Ok(op) => op,
                Err(_) => return self.err("truncated: stream ends before STOP"),
            };
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 2 {
                        return self.err(format!("protocol {proto} (only 2 and below supported)"));
                    }
                }
                b'.' => {
                    let v = self.pop()?;
                    if !self.stack.is_empty() {
                        return self.err(format!(
                            "{} items left on the stack at STOP",
                            self.stack.len()
                        ));
                    }
                    return Ok(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let callable = match (module, name) {
                        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                            Callable::Reconstruct
                        }
                        ("numpy", "ndarray") => Callable::NdarrayType,
                        ("numpy", "dtype") => Callable::DtypeType,
                        _ => return self.err(format!("refusing global {module}.{name}")),
                    };
                    self.push(Value::Global(callable))?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(Value::Int(v))?;
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Value::Int(v))?;
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.push(Value::Int(v))?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'(' => self.push(Value::Mark)?,
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let items = self.pop_n(n)?;
                    self.push_tuple(items)?;
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.push(Value::Bytes(s))?;
                }
                b'T' | b'B' => {
                    let n = self.u32()?;
                    if op == b'T' && n > i32::MAX as u32 {
                        return self.err(format!("BINSTRING with negative length {}", n as i32));
                    }
                    let s = self.take(n as usize)?;
                    self.push(Value::Bytes(s))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?.clone();
                    self.build(obj, state)?;
                }
                _ => {
                    return self.err(format!(
                        "unsupported opcode 0x{op:02x} ({:?}); this reader only handles numpy \
                         array pickles of protocol 2",
                        op as char
                    ))
                }
            }
        }
    }

    fn reduce(&self, callable: Value<'a>, args: Value<'a>) -> Result<Value<'a>, PickleError> {
        let Value::Tuple(args) = args else {
            return self.err(format!(
                "REDUCE arguments are a {}, not a tuple",
                args.kind()
            ));
        };
        match callable {
            Value::Global(Callable::Reconstruct) => {
                // numpy's ndarray.__reduce__ gives (_reconstruct, (ndarray, (0,), b'b')).
                match args.as_slice() {
                    [Value::Global(Callable::NdarrayType), Value::Tuple(_), Value::Bytes(_)] => {
                        Ok(Value::Array(Rc::new(RefCell::new(ArrayState::default()))))
                    }
                    _ => self.err(
                        "_reconstruct called with arguments other than (ndarray, shape, typecode)",
                    ),
                }
            }
            Value::Global(Callable::DtypeType) => match args.as_slice() {
                [Value::Bytes(code), Value::Int(_), Value::Int(_)] => {
                    let Ok(code) = std::str::from_utf8(code) else {
                        return self.err("dtype code is not UTF-8");
                    };
                    let dtype = Dtype {
                        code: code.to_string(),
                        byteorder: '=',
                    };
                    if dtype.itemsize().is_none() || !code.starts_with(['f', 'i', 'u', 'b']) {
                        return self.err(format!("unsupported dtype '{code}'"));
                    }
                    Ok(Value::Dtype(Rc::new(RefCell::new(dtype))))
                }
                _ => self.err("numpy.dtype called with arguments other than (code, 0, 1)"),
            },
            other => self.err(format!(
                "REDUCE on a {}, which is not callable here",
                other.kind()
            )),
        }
    }

    fn build(&self, obj: Value<'a>, state: Value<'a>) -> Result<(), PickleError> {
        let Value::Tuple(state) = state else {
            return self.err(format!("BUILD state is a {}, not a tuple", state.kind()));
        };
        match obj {
            Value::Dtype(d) => {
                // numpy's dtype.__setstate__: (version, byteorder, subarray, names, fields,
                // elsize, alignment, flags); only the byte order matters for plain dtypes.
                let order = match state.get(1) {
                    Some(Value::Bytes(b)) if b.len() == 1 => b[0] as char,
                    _ => return self.err("dtype state without a byte-order string"),
                };
                if state.len() < 5 || !state[2..5].iter().all(|v| matches!(v, Value::None)) {
                    return self
                        .err("dtype state with subarrays or fields (only plain dtypes supported)");
                }
                let order = match order {
                    '<' | '|' | '>' => order,
                    '=' => '<',
                    _ => return self.err(format!("dtype byte order '{order}'")),
                };
                d.borrow_mut().byteorder = order;
                Ok(())
            }
            Value::Array(a) => {
                // ndarray.__setstate__: (version, shape, dtype, is_fortran, raw bytes).
                let [Value::Int(_), Value::Tuple(shape), Value::Dtype(dtype), Value::Bool(fortran), Value::Bytes(data)] =
                    state.as_slice()
                else {
                    return self
                        .err("ndarray state is not (version, shape, dtype, is_fortran, bytes)");
                };
                let mut dims = Vec::with_capacity(shape.len());
                for d in shape {
                    match d {
                        Value::Int(n) if *n >= 0 => dims.push(*n as usize),
                        _ => {
                            return self
                                .err("ndarray shape holds something other than a non-negative int")
                        }
                    }
                }
                if *fortran && dims.len() > 1 {
                    return self.err("Fortran-ordered arrays are not supported");
                }
                let dtype = dtype.borrow().clone();
                let Some(itemsize) = dtype.itemsize() else {
                    return self.err(format!("dtype '{}' has no item size", dtype.code));
                };
                let want = dims.iter().try_fold(itemsize, |acc, &d| acc.checked_mul(d));
                if want != Some(data.len()) {
                    return self.err(format!(
                        "ndarray of shape {dims:?} and dtype {} needs {:?} bytes, the pickle holds {}",
                        dtype.code,
                        want,
                        data.len()
                    ));
                }
                a.borrow_mut().built = Some(NdArray {
                    shape: dims,
                    dtype,
                    data,
                });
                Ok(())
            }
            other => self.err(format!("BUILD on a {}", other.kind())),
        }
    }
}
