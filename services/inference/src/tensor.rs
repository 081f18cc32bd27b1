//! Tensors as the Open Inference Protocol carries them: a datatype, a shape and row-major data, with the
//! three encodings the protocol uses: JSON (`data`, flat or nested), raw little-endian bytes (the binary
//! tensor extension and gRPC `raw_*_contents`), and gRPC typed contents.

use crate::error::InferError;
use half::f16;
use serde_json::Value;

/// An OIP datatype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The protocol's name: `BOOL`, `UINT8`, ..., `FP32`, `BYTES`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(name: &str) -> Result<Self, InferError> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| InferError::invalid(format!("unknown datatype {name:?}")))
    }

    /// Bytes per element in the raw encoding; `None` for BYTES.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Calls `$body` with `$v` bound to the inner Vec of every variant.
macro_rules! each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::Bool($v) => $body,
            Data::U8($v) => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            Data::I8($v) => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::F16($v) => $body,
            Data::F32($v) => $body,
            Data::F64($v) => $body,
            Data::Bytes($v) => $body,
        }
    };
}

impl Data {
    pub fn datatype(&self) -> DataType {
        match self {
            Data::Bool(_) => DataType::Bool,
            Data::U8(_) => DataType::U8,
            Data::U16(_) => DataType::U16,
            Data::U32(_) => DataType::U32,
            Data::U64(_) => DataType::U64,
            Data::I8(_) => DataType::I8,
            Data::I16(_) => DataType::I16,
            Data::I32(_) => DataType::I32,
            Data::I64(_) => DataType::I64,
            Data::F16(_) => DataType::F16,
            Data::F32(_) => DataType::F32,
            Data::F64(_) => DataType::F64,
            Data::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        each_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of `datatype` with room for `n` elements.
    pub fn with_capacity(datatype: DataType, n: usize) -> Self {
        match datatype {
            DataType::Bool => Data::Bool(Vec::with_capacity(n)),
            DataType::U8 => Data::U8(Vec::with_capacity(n)),
            DataType::U16 => Data::U16(Vec::with_capacity(n)),
            DataType::U32 => Data::U32(Vec::with_capacity(n)),
            DataType::U64 => Data::U64(Vec::with_capacity(n)),
            DataType::I8 => Data::I8(Vec::with_capacity(n)),
            DataType::I16 => Data::I16(Vec::with_capacity(n)),
            DataType::I32 => Data::I32(Vec::with_capacity(n)),
            DataType::I64 => Data::I64(Vec::with_capacity(n)),
            DataType::F16 => Data::F16(Vec::with_capacity(n)),
            DataType::F32 => Data::F32(Vec::with_capacity(n)),
            DataType::F64 => Data::F64(Vec::with_capacity(n)),
            DataType::Bytes => Data::Bytes(Vec::with_capacity(n)),
        }
    }

    /// `n` zeros (false, empty strings) of `datatype`.
    pub fn zeros(datatype: DataType, n: usize) -> Self {
        match datatype {
            DataType::Bool => Data::Bool(vec![false; n]),
            DataType::U8 => Data::U8(vec![0; n]),
            DataType::U16 => Data::U16(vec![0; n]),
            DataType::U32 => Data::U32(vec![0; n]),
            DataType::U64 => Data::U64(vec![0; n]),
            DataType::I8 => Data::I8(vec![0; n]),
            DataType::I16 => Data::I16(vec![0; n]),
            DataType::I32 => Data::I32(vec![0; n]),
            DataType::I64 => Data::I64(vec![0; n]),
            DataType::F16 => Data::F16(vec![f16::ZERO; n]),
            DataType::F32 => Data::F32(vec![0.0; n]),
            DataType::F64 => Data::F64(vec![0.0; n]),
            DataType::Bytes => Data::Bytes(vec![Vec::new(); n]),
        }
    }

    /// Appends `other`, which must have the same datatype.
    pub fn extend_from(&mut self, other: &Data) -> Result<(), InferError> {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((Data::$var(a), Data::$var(b)) => a.extend_from_slice(b),)*
                    (a, b) => {
                        return Err(InferError::internal(format!("cannot join {} and {}", a.datatype(), b.datatype())))
                    }
                }
            };
        }
        ext!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes);
        Ok(())
    }

    /// Elements `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Data {
        macro_rules! sl {
            ($($var:ident),*) => {
                match self { $(Data::$var(v) => Data::$var(v[start..end].to_vec()),)* }
            };
        }
        sl!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes)
    }

    /// Parses JSON `data` (flat or nested arrays) of `datatype`.
    pub fn from_json(datatype: DataType, value: &Value, expected: usize) -> Result<Self, InferError> {
        let mut flat = Vec::with_capacity(expected);
        flatten(value, &mut flat, 0)?;
        if flat.len() != expected {
            return Err(InferError::invalid(format!(
                "data has {} elements but the shape asks for {expected}",
                flat.len()
            )));
        }
        fn num<T: TryFrom<i64> + TryFrom<u64>>(v: &Value, dt: DataType) -> Result<T, InferError> {
            let out = if let Some(i) = v.as_i64() {
                T::try_from(i).ok()
            } else if let Some(u) = v.as_u64() {
                T::try_from(u).ok()
            } else {
                None
            };
            out.ok_or_else(|| InferError::invalid(format!("{v} is not a valid {dt} value")))
        }
        fn float(v: &Value, dt: DataType) -> Result<f64, InferError> {
            v.as_f64().ok_or_else(|| InferError::invalid(format!("{v} is not a valid {dt} value")))
        }
        let dt = datatype;
        macro_rules! ints {
            ($var:ident) => {
                Data::$var(flat.iter().map(|v| num(v, dt)).collect::<Result<_, _>>()?)
            };
        }
        Ok(match datatype {
            DataType::Bool => Data::Bool(
                flat.iter()
                    .map(|v| {
                        v.as_bool()
                            .ok_or_else(|| InferError::invalid(format!("{v} is not a valid BOOL value")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::U8 => ints!(U8),
            DataType::U16 => ints!(U16),
            DataType::U32 => ints!(U32),
            DataType::U64 => ints!(U64),
            DataType::I8 => ints!(I8),
            DataType::I16 => ints!(I16),
            DataType::I32 => ints!(I32),
            DataType::I64 => ints!(I64),
            DataType::F16 => {
                return Err(InferError::invalid(
                    "FP16 cannot be sent as JSON; use the binary tensor data extension",
                ));
            }
            DataType::F32 => {
                Data::F32(flat.iter().map(|v| float(v, dt).map(|f| f as f32)).collect::<Result<_, _>>()?)
            }
            DataType::F64 => Data::F64(flat.iter().map(|v| float(v, dt)).collect::<Result<_, _>>()?),
            DataType::Bytes => Data::Bytes(
                flat.iter()
                    .map(|v| {
                        v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
                            InferError::invalid(format!("{v} is not a valid BYTES value (a string)"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The elements as a flat JSON array. Non-finite floats become `null`; BYTES become strings (lossy UTF-8).
    pub fn to_json(&self) -> Value {
        fn f(x: f64) -> Value {
            serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
        }
        Value::Array(match self {
            Data::Bool(v) => v.iter().map(|&x| Value::Bool(x)).collect(),
            Data::U8(v) => v.iter().map(|&x| x.into()).collect(),
            Data::U16(v) => v.iter().map(|&x| x.into()).collect(),
            Data::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Data::U64(v) => v.iter().map(|&x| x.into()).collect(),
            Data::I8(v) => v.iter().map(|&x| x.into()).collect(),
            Data::I16(v) => v.iter().map(|&x| x.into()).collect(),
            Data::I32(v) => v.iter().map(|&x| x.into()).collect(),
            Data::I64(v) => v.iter().map(|&x| x.into()).collect(),
            Data::F16(v) => v.iter().map(|x| f(x.to_f64())).collect(),
            Data::F32(v) => v.iter().map(|&x| f(x as f64)).collect(),
            Data::F64(v) => v.iter().map(|&x| f(x)).collect(),
            Data::Bytes(v) => {
                v.iter().map(|b| Value::String(String::from_utf8_lossy(b).into_owned())).collect()
            }
        })
    }

    /// Decodes the raw encoding: little-endian elements; BYTES as 4-byte little-endian length + bytes.
    pub fn from_raw(datatype: DataType, raw: &[u8], expected: usize) -> Result<Self, InferError> {
        let Some(size) = datatype.size() else {
            let mut out = Vec::with_capacity(expected);
            let mut rest = raw;
            while !rest.is_empty() {
                let (len, tail) =
                    rest.split_at_checked(4).ok_or_else(|| InferError::invalid("truncated BYTES length"))?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let (item, tail) = tail
                    .split_at_checked(len)
                    .ok_or_else(|| InferError::invalid("a BYTES element runs past the data"))?;
                out.push(item.to_vec());
                rest = tail;
            }
            if out.len() != expected {
                return Err(InferError::invalid(format!(
                    "raw data has {} BYTES elements but the shape asks for {expected}",
                    out.len()
                )));
            }
            return Ok(Data::Bytes(out));
        };
        if raw.len() != expected * size {
            return Err(InferError::invalid(format!(
                "raw data has {} bytes but the shape asks for {expected} {datatype} elements ({} bytes)",
                raw.len(),
                expected * size
            )));
        }
        macro_rules! le {
            ($var:ident, $t:ty, $n:literal) => {
                Data::$var(
                    raw.chunks_exact($n)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])))
                        .collect(),
                )
            };
        }
        Ok(match datatype {
            DataType::Bool => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
            DataType::U8 => Data::U8(raw.to_vec()),
            DataType::I8 => Data::I8(raw.iter().map(|&b| b as i8).collect()),
            DataType::U16 => le!(U16, u16, 2),
            DataType::I16 => le!(I16, i16, 2),
            DataType::F16 => Data::F16(
                raw.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect(),
            ),
            DataType::U32 => le!(U32, u32, 4),
            DataType::I32 => le!(I32, i32, 4),
            DataType::F32 => le!(F32, f32, 4),
            DataType::U64 => le!(U64, u64, 8),
            DataType::I64 => le!(I64, i64, 8),
            DataType::F64 => le!(F64, f64, 8),
            DataType::Bytes => unreachable!("handled above"),
        })
    }

    /// Encodes the raw form (see [`Data::from_raw`]).
    pub fn to_raw(&self) -> Vec<u8> {
        macro_rules! le {
            ($v:expr) => {
                $v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
        }
        match self {
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            Data::U8(v) => v.clone(),
            Data::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Data::U16(v) => le!(v),
            Data::I16(v) => le!(v),
            Data::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Data::U32(v) => le!(v),
            Data::I32(v) => le!(v),
            Data::F32(v) => le!(v),
            Data::U64(v) => le!(v),
            Data::I64(v) => le!(v),
            Data::F64(v) => le!(v),
            Data::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|b| b.len() + 4).sum());
                for b in v {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
                out
            }
        }
    }
}

/// Collects the leaves of nested JSON arrays, refusing anything deeper than any real tensor.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), InferError> {
    if depth > 64 {
        return Err(InferError::invalid("data is nested too deeply"));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, depth + 1)),
        Value::Object(_) => {
            Err(InferError::invalid("data must hold numbers, booleans or strings, not objects"))
        }
        leaf => {
            out.push(leaf);
            Ok(())
        }
    }
}

/// Number of elements of `shape`, refusing negative dimensions and overflow.
pub fn element_count(shape: &[i64]) -> Result<usize, InferError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d)
            .map_err(|_| InferError::invalid(format!("shape {shape:?} has a negative dimension")))?;
        acc.checked_mul(d).ok_or_else(|| InferError::invalid(format!("shape {shape:?} is too large")))
    })
}

/// A named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Data,
}

impl Tensor {
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_flat_and_nested_parse_alike() {
        let flat = Data::from_json(DataType::F32, &json!([1, 2.5, 3, 4]), 4).unwrap();
        let nested = Data::from_json(DataType::F32, &json!([[1, 2.5], [3, 4]]), 4).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, Data::F32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_refuses_wrong_types_counts_and_ranges() {
        let err = |dt, v: Value, n| Data::from_json(dt, &v, n).unwrap_err().to_string();
        assert!(err(DataType::I64, json!([1.5]), 1).contains("not a valid INT64"));
        assert!(err(DataType::U8, json!([256]), 1).contains("not a valid UINT8"));
        assert!(err(DataType::U32, json!([-1]), 1).contains("not a valid UINT32"));
        assert!(err(DataType::Bool, json!([1]), 1).contains("not a valid BOOL"));
        assert!(err(DataType::F32, json!(["x"]), 1).contains("not a valid FP32"));
        assert!(err(DataType::Bytes, json!([1]), 1).contains("not a valid BYTES"));
        assert!(err(DataType::F32, json!([1, 2]), 3).contains("2 elements but the shape asks for 3"));
        assert!(err(DataType::F32, json!([{"a": 1}]), 1).contains("not objects"));
        assert!(err(DataType::F16, json!([1]), 1).contains("binary"));
    }

    #[test]
    fn raw_round_trips_every_datatype() {
        let samples = vec![
            Data::Bool(vec![true, false]),
            Data::U8(vec![0, 255]),
            Data::U16(vec![1, 65535]),
            Data::U32(vec![7, u32::MAX]),
            Data::U64(vec![9, u64::MAX]),
            Data::I8(vec![-128, 127]),
            Data::I16(vec![-2, 3]),
            Data::I32(vec![i32::MIN, 5]),
            Data::I64(vec![i64::MIN, i64::MAX]),
            Data::F16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)]),
            Data::F32(vec![1.5, -0.25]),
            Data::F64(vec![1e300, -3.0]),
            Data::Bytes(vec![b"hello".to_vec(), vec![]]),
        ];
        for d in samples {
            let raw = d.to_raw();
            assert_eq!(Data::from_raw(d.datatype(), &raw, d.len()).unwrap(), d, "{}", d.datatype());
        }
    }

    #[test]
    fn raw_refuses_bad_lengths() {
        assert!(Data::from_raw(DataType::F32, &[0; 7], 2).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[1, 0], 1).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[0, 0, 0, 0], 2).is_err());
    }

    #[test]
    fn element_count_guards() {
        assert_eq!(element_count(&[2, 3]).unwrap(), 6);
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert!(element_count(&[-1, 3]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn join_and_slice() {
        let mut a = Data::I64(vec![1, 2]);
        a.extend_from(&Data::I64(vec![3])).unwrap();
        assert_eq!(a.slice(1, 3), Data::I64(vec![2, 3]));
        assert!(a.extend_from(&Data::F32(vec![1.0])).is_err());
    }
}
