//! A small, safe reader (and writer) for the Python pickles of the CIFAR datasets.
//!
//! It understands the protocol-2 opcodes those files use and nothing else. It never
//! executes anything: the only globals it accepts are the three numpy names needed to
//! rebuild a `uint8` array (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`,
//! `numpy.dtype`), and these are interpreted, not called. Every length read from the
//! stream is checked against the bytes actually left before anything is allocated.
//!
//! Byte strings and array data are returned as ranges into the input, so a 150 MB array
//! is never copied by the parser.

use std::collections::HashMap;
use std::ops::Range;

/// A decoded pickle value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A byte string (Python 2 `str`), as a range into the input.
    Bytes(Range<usize>),
    /// A unicode string.
    Str(String),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A numpy array of bytes (`dtype uint8`): its shape and its data as a range into the input.
    Array {
        /// The array's shape.
        shape: Vec<usize>,
        /// Row-major bytes.
        data: Range<usize>,
    },
    /// An allowed numpy global, before it is applied.
    Global(NumpyGlobal),
    /// A numpy dtype, by its code (`"u1"`).
    Dtype(String),
    /// An array created by `_reconstruct` and not yet filled in by `BUILD`.
    EmptyArray,
}

/// The numpy names a CIFAR pickle may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumpyGlobal {
    /// `numpy.core.multiarray._reconstruct` (or `numpy._core.multiarray._reconstruct`).
    Reconstruct,
    /// `numpy.ndarray`.
    NdArray,
    /// `numpy.dtype`.
    Dtype,
}

/// Why a pickle was refused: what was wrong and at which byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("pickle byte {offset}: {message}")]
pub struct PickleError {
    /// Offset of the opcode that failed.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

impl Value {
    /// Looks up a byte-string key in a dict (`d[b"key"]`).
    pub fn get<'a>(&'a self, input: &[u8], key: &[u8]) -> Option<&'a Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| {
                    matches!(k, Value::Bytes(r) if &input[r.clone()] == key)
                        || matches!(k, Value::Str(s) if s.as_bytes() == key)
                })
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
            Value::Array { .. } => "numpy array",
            Value::Global(_) => "numpy global",
            Value::Dtype(_) => "numpy dtype",
            Value::EmptyArray => "unfinished numpy array",
        }
    }
}

/// Stack entries: values and MARK positions.
enum Slot {
    Mark,
    Value(Value),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    op_start: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
}

/// Parses a whole pickle and returns its top-level value.
pub fn parse(input: &[u8]) -> Result<Value, PickleError> {
    Parser {
        input,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

impl<'a> Parser<'a> {
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_start,
            message: message.into(),
        })
    }

    /// Takes `n` bytes, failing (before any allocation) if fewer are left.
    fn take(&mut self, n: usize) -> Result<Range<usize>, PickleError> {
        let left = self.input.len() - self.pos;
        if n > left {
            return self.fail(format!(
                "declares {n} bytes but only {left} are left (truncated file?)"
            ));
        }
        self.pos += n;
        Ok(self.pos - n..self.pos)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        let r = self.take(1)?;
        Ok(self.input[r.start])
    }

    fn le_u32(&mut self) -> Result<u32, PickleError> {
        let r = self.take(4)?;
        Ok(u32::from_le_bytes(
            self.input[r].try_into().expect("4 bytes"),
        ))
    }

    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.input[self.pos..];
        let Some(end) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.fail("unterminated name in GLOBAL");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.fail("GLOBAL name is not UTF-8"))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(Slot::Value(v));
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Mark) => self.fail("found a MARK where a value was expected"),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut Value, PickleError> {
        match self.stack.last_mut() {
            Some(Slot::Value(v)) => Ok(v),
            _ => Err(PickleError {
                offset: self.op_start,
                message: "expected a value on the stack".into(),
            }),
        }
    }

    /// Pops everything above the last MARK (and the MARK).
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(mark) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.fail("no MARK on the stack");
        };
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Value(v) => v,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), PickleError> {
        match self.memo.get(&id) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => self.fail(format!("memo entry {id} was never stored")),
        }
    }

    fn memo_put(&mut self, id: u32) -> Result<(), PickleError> {
        let v = self.top()?.clone();
        // Containers are stored before they are filled; keep the memo cheap and only
        // remember scalars and strings, which is all a later GET may refer to here.
        if !matches!(v, Value::List(_) | Value::Dict(_)) {
            self.memo.insert(id, v);
        }
        Ok(())
    }

    fn global(&mut self) -> Result<Value, PickleError> {
        let module = self.line()?;
        let name = self.line()?;
        let g = match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                NumpyGlobal::Reconstruct
            }
            ("numpy", "ndarray") => NumpyGlobal::NdArray,
            ("numpy", "dtype") => NumpyGlobal::Dtype,
            _ => {
                return self.fail(format!(
                    "refusing global {module}.{name}: only numpy array reconstruction is allowed"
                ))
            }
        };
        Ok(Value::Global(g))
    }

    fn reduce(&mut self) -> Result<Value, PickleError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Value::Tuple(args) = args else {
            return self.fail("REDUCE arguments are not a tuple");
        };
        match (callable, args.as_slice()) {
            (
                Value::Global(NumpyGlobal::Reconstruct),
                [Value::Global(NumpyGlobal::NdArray), ..],
            ) => Ok(Value::EmptyArray),
            (Value::Global(NumpyGlobal::Dtype), [Value::Bytes(r), ..]) => Ok(Value::Dtype(
                String::from_utf8_lossy(&self.input[r.clone()]).into_owned(),
            )),
            (Value::Global(NumpyGlobal::Dtype), [Value::Str(s), ..]) => Ok(Value::Dtype(s.clone())),
            (c, _) => self.fail(format!("cannot apply a {} in REDUCE", c.kind())),
        }
    }

    fn build(&mut self) -> Result<Value, PickleError> {
        let state = self.pop()?;
        let obj = self.pop()?;
        match obj {
            Value::Dtype(code) => Ok(Value::Dtype(code)),
            Value::EmptyArray => {
                let Value::Tuple(state) = state else {
                    return self.fail("array state is not a tuple");
                };
                let [_version, Value::Tuple(shape), Value::Dtype(dtype), Value::Bool(fortran), data] =
                    state.as_slice()
                else {
                    return self.fail("array state is not (version, shape, dtype, fortran, data)");
                };
                if dtype != "u1" {
                    return self.fail(format!(
                        "array dtype {dtype} is not supported (expected u1: bytes)"
                    ));
                }
                let mut dims = Vec::with_capacity(shape.len());
                for d in shape {
                    match d {
                        Value::Int(n) if *n >= 0 => dims.push(*n as usize),
                        _ => {
                            return self.fail("array shape is not a tuple of non-negative integers")
                        }
                    }
                }
                let Value::Bytes(data) = data else {
                    return self.fail("array data is not a byte string");
                };
                let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                if expected != Some(data.len()) {
                    return self.fail(format!(
                        "array of shape {dims:?} needs {expected:?} bytes but has {}",
                        data.len()
                    ));
                }
                if *fortran && dims.len() > 1 {
                    return self.fail("Fortran-ordered arrays are not supported");
                }
                Ok(Value::Array {
                    shape: dims,
                    data: data.clone(),
                })
            }
            other => self.fail(format!("cannot BUILD a {}", other.kind())),
        }
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.u8().or_else(|_| self.fail("file ends before STOP"))?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 4 {
                        return self.fail(format!(
                            "pickle protocol {proto} is not supported (expected ≤ 4)"
                        ));
                    }
                }
                b'.' => {
                    let v = self.pop()?;
                    return if self.stack.is_empty() {
                        Ok(v)
                    } else {
                        self.fail("values left on the stack at STOP")
                    };
                }
                b'(' => self.stack.push(Slot::Mark),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let r = self.take(2)?;
                    self.push(Value::Int(
                        u16::from_le_bytes([self.input[r.start], self.input[r.start + 1]]).into(),
                    ));
                }
                b'J' => {
                    let v = self.le_u32()? as i32;
                    self.push(Value::Int(v.into()));
                }
                b'G' => {
                    let r = self.take(8)?;
                    self.push(Value::Float(f64::from_be_bytes(
                        self.input[r].try_into().expect("8 bytes"),
                    )));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let r = self.take(n)?;
                    self.push(Value::Bytes(r));
                }
                b'T' | b'B' => {
                    let n = self.le_u32()? as usize;
                    let r = self.take(n)?;
                    self.push(Value::Bytes(r));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let r = self.take(n)?;
                    self.push(Value::Bytes(r));
                }
                b'X' => {
                    let n = self.le_u32()? as usize;
                    let r = self.take(n)?;
                    let s = std::str::from_utf8(&self.input[r])
                        .or_else(|_| self.fail("BINUNICODE is not UTF-8"))?;
                    self.push(Value::Str(s.to_owned()));
                }
                b'}' => self.push(Value::Dict(Vec::new())),
                b']' => self.push(Value::List(Vec::new())),
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.fail("stack underflow in TUPLE");
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        other => {
                            let kind = other.kind();
                            return self.fail(format!("APPEND to a {kind}"));
                        }
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        other => {
                            let kind = other.kind();
                            return self.fail(format!("APPENDS to a {kind}"));
                        }
                    }
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        let k = self.pop()?;
                        vec![k, v]
                    } else {
                        self.pop_mark()?
                    };
                    if items.len() % 2 != 0 {
                        return self.fail("SETITEMS with an odd number of values");
                    }
                    let Value::Dict(d) = self.top()? else {
                        return self.fail("SETITEM(S) on something that is not a dict");
                    };
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'q' => {
                    let id = self.u8()?.into();
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = self.le_u32()?;
                    self.memo_put(id)?;
                }
                b'h' => {
                    let id = self.u8()?.into();
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = self.le_u32()?;
                    self.memo_get(id)?;
                }
                b'c' => {
                    let g = self.global()?;
                    self.push(g);
                }
                b'R' => {
                    let v = self.reduce()?;
                    self.push(v);
                }
                b'b' => {
                    let v = self.build()?;
                    self.push(v);
                }
                other => return self.fail(format!("unsupported opcode 0x{other:02x}")),
            }
        }
    }
}

/// Writes pickles with the same opcodes as the original CIFAR files (protocol 2), so that
/// `pickle.load(f, encoding='bytes')` reads them in Python.
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// A pickle that starts with `PROTO 2`.
    pub fn new() -> Self {
        Self { out: vec![0x80, 2] }
    }

    /// A byte string (`SHORT_BINSTRING` or `BINSTRING`).
    ///
    /// # Panics
    /// If `b` is 4 GiB or longer.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if b.len() < 256 {
            self.out.extend([b'U', b.len() as u8]);
        } else {
            let n = u32::try_from(b.len()).expect("byte strings under 4 GiB");
            self.out.push(b'T');
            self.out.extend(n.to_le_bytes());
        }
        self.out.extend_from_slice(b);
        self
    }

    /// An integer (`BININT1`, `BININT2` or `BININT`).
    pub fn int(&mut self, v: i32) -> &mut Self {
        match v {
            0..=255 => self.out.extend([b'K', v as u8]),
            256..=65535 => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ => {
                self.out.push(b'J');
                self.out.extend(v.to_le_bytes());
            }
        }
        self
    }

    /// A list of integers (`EMPTY_LIST`, then `APPENDS` in chunks of 1000 like Python).
    pub fn int_list(&mut self, values: &[i32]) -> &mut Self {
        self.out.push(b']');
        for chunk in values.chunks(1000) {
            self.out.push(b'(');
            chunk.iter().for_each(|&v| {
                self.int(v);
            });
            self.out.push(b'e');
        }
        self
    }

    /// A list of byte strings.
    pub fn bytes_list<B: AsRef<[u8]>>(&mut self, values: &[B]) -> &mut Self {
        self.out.push(b']');
        for chunk in values.chunks(1000) {
            self.out.push(b'(');
            chunk.iter().for_each(|v| {
                self.bytes(v.as_ref());
            });
            self.out.push(b'e');
        }
        self
    }

    /// A numpy `uint8` array of `shape`, rebuilt through `numpy.core.multiarray._reconstruct`.
    pub fn u8_array(&mut self, shape: &[usize], data: &[u8]) -> &mut Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "u8_array: shape and data disagree"
        );
        assert!(
            (1..=3).contains(&shape.len()),
            "u8_array: 1 to 3 dimensions"
        );
        self.out
            .extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n");
        self.int(0);
        self.out.push(0x85); // (0,)
        self.bytes(b"b");
        self.out.push(0x87); // TUPLE3
        self.out.push(b'R');
        self.out.push(b'(');
        self.int(1);
        for &d in shape {
            self.int(i32::try_from(d).expect("dimension fits in i32"));
        }
        self.out.push(0x84 + shape.len() as u8); // TUPLE1..3
        self.out.extend_from_slice(b"cnumpy\ndtype\n");
        self.bytes(b"u1");
        self.int(0);
        self.int(1);
        self.out.push(0x87);
        self.out.push(b'R');
        self.out.push(b'(');
        self.int(3);
        self.bytes(b"|");
        self.out.extend_from_slice(b"NNN");
        self.int(-1);
        self.int(-1);
        self.int(0);
        self.out.push(b't');
        self.out.push(b'b');
        self.out.push(0x89); // not Fortran order
        self.bytes(data);
        self.out.push(b't');
        self.out.push(b'b');
        self
    }

    /// Starts a dict and its items (`EMPTY_DICT`, `MARK`); close with [`Writer::end_dict`].
    pub fn begin_dict(&mut self) -> &mut Self {
        self.out.extend([b'}', b'(']);
        self
    }

    /// Ends the items of a dict (`SETITEMS`).
    pub fn end_dict(&mut self) -> &mut Self {
        self.out.push(b'u');
        self
    }

    /// Ends the pickle (`STOP`) and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.begin_dict();
        w.bytes(b"labels").int_list(&[0, 7, 300, 70000, -1]);
        w.bytes(b"data").u8_array(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        w.bytes(b"names")
            .bytes_list(&[b"apple".as_slice(), &[b'x'; 300]]);
        w.end_dict();
        w.finish()
    }

    #[test]
    fn round_trip_through_the_writer() {
        let bytes = sample();
        let v = parse(&bytes).unwrap();
        assert_eq!(
            v.get(&bytes, b"labels"),
            Some(&Value::List(
                [0, 7, 300, 70000, -1].map(Value::Int).to_vec()
            ))
        );
        let Some(Value::Array { shape, data }) = v.get(&bytes, b"data") else {
            panic!("no array")
        };
        assert_eq!(shape, &[2, 3]);
        assert_eq!(&bytes[data.clone()], &[1, 2, 3, 4, 5, 6]);
        let Some(Value::List(names)) = v.get(&bytes, b"names") else {
            panic!("no names")
        };
        let Value::Bytes(r) = &names[1] else { panic!() };
        assert_eq!(r.len(), 300);
        assert_eq!(v.get(&bytes, b"missing"), None);
    }

    #[test]
    fn foreign_global_is_refused_without_running_it() {
        let evil = b"\x80\x02cos\nsystem\nU\x0becho pwned\x85R.";
        let err = parse(evil).unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("refusing global os.system"), "{err}");
    }

    #[test]
    fn huge_declared_length_fails_before_allocating() {
        let err = parse(b"\x80\x02T\xff\xff\xff\x7fabc").unwrap_err();
        assert!(
            err.message
                .contains("declares 2147483647 bytes but only 3 are left"),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn unknown_opcode_and_wrong_shapes_are_reported() {
        assert!(parse(b"\x80\x02\xff")
            .unwrap_err()
            .message
            .contains("unsupported opcode 0xff"));
        assert!(parse(b"\x80\x09N.")
            .unwrap_err()
            .message
            .contains("protocol 9"));
        assert!(parse(b"\x80\x02e.")
            .unwrap_err()
            .message
            .contains("no MARK"));
        assert!(parse(b"\x80\x02NN.")
            .unwrap_err()
            .message
            .contains("left on the stack"));
        // an array whose shape promises more bytes than it carries
        let mut bytes = sample();
        let at = bytes
            .windows(4)
            .position(|w| w == [b'K', 1, b'K', 2])
            .unwrap();
        bytes[at + 3] = 9; // shape (9, 3)
        assert!(parse(&bytes)
            .unwrap_err()
            .message
            .contains("needs Some(27) bytes but has 6"));
    }
}
