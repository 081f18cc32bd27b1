//! Tensors as the Open Inference Protocol carries them: a datatype, a shape and row-major data, with the
//! three encodings the protocol uses: JSON (`data`, flat or nested), raw little-endian bytes (the binary
//! tensor extension and gRPC `raw_*_contents`), and gRPC typed contents.

use crate::error::InferError;
use half::f16;

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
            .ok_or_else(|| InferError::invalid(format!("unknown datatype {}", crate::error::shown(name))))
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

    /// Parses JSON `data` (flat or nested arrays) of `datatype` straight into the typed elements: nothing
    /// but the elements themselves is allocated, and parsing stops at the first element past `expected`.
    pub fn from_json(datatype: DataType, json: &str, expected: usize) -> Result<Self, InferError> {
        if datatype == DataType::F16 {
            return Err(InferError::invalid(
                "FP16 cannot be sent as JSON; use the binary tensor data extension",
            ));
        }
        // Every element takes at least one character, so `expected` past the text's length cannot be met
        // and must not size an allocation.
        if expected > json.len() {
            return Err(InferError::invalid(format!(
                "data has fewer elements than the shape asks for ({expected})"
            )));
        }
        let mut data = Data::with_capacity(datatype, expected);
        let mut de = serde_json::Deserializer::from_str(json);
        serde::de::DeserializeSeed::deserialize(Leaves { data: &mut data, expected, depth: 0 }, &mut de)
            .and_then(|()| de.end())
            .map_err(|e| InferError::invalid(json_error(&e)))?;
        if data.len() != expected {
            return Err(InferError::invalid(format!(
                "data has {} elements but the shape asks for {expected}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// Decodes the raw encoding: little-endian elements; BYTES as 4-byte little-endian length + bytes.
    pub fn from_raw(datatype: DataType, raw: &[u8], expected: usize) -> Result<Self, InferError> {
        let Some(size) = datatype.size() else {
            // Each element takes at least its 4-byte length, so the data bounds the count.
            let mut out = Vec::with_capacity(expected.min(raw.len() / 4));
            let mut rest = raw;
            while !rest.is_empty() {
                let (len, tail) =
                    rest.split_at_checked(4).ok_or_else(|| InferError::invalid("truncated BYTES length"))?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let (item, tail) = tail
                    .split_at_checked(len)
                    .ok_or_else(|| InferError::invalid("a BYTES element runs past the data"))?;
                if out.len() == expected {
                    break;
                }
                out.push(item.to_vec());
                rest = tail;
            }
            if out.len() != expected || !rest.is_empty() {
                return Err(InferError::invalid(format!(
                    "raw data has {}{} BYTES elements but the shape asks for {expected}",
                    if rest.is_empty() { "" } else { "more than " },
                    out.len()
                )));
            }
            return Ok(Data::Bytes(out));
        };
        if expected.checked_mul(size) != Some(raw.len()) {
            return Err(InferError::invalid(format!(
                "raw data has {} bytes but the shape asks for {expected} {datatype} elements ({} bytes)",
                raw.len(),
                expected as u128 * size as u128
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

    /// Bytes of the raw form.
    pub fn raw_len(&self) -> usize {
        match (self, self.datatype().size()) {
            (Data::Bytes(v), _) => v.iter().map(|b| b.len() + 4).sum(),
            (d, size) => d.len() * size.unwrap_or(0),
        }
    }

    /// Appends the raw form to `out`.
    pub fn write_raw(&self, out: &mut Vec<u8>) {
        macro_rules! le {
            ($v:expr) => {
                $v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            };
        }
        match self {
            Data::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
            Data::U8(v) => out.extend_from_slice(v),
            Data::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            Data::U16(v) => le!(v),
            Data::I16(v) => le!(v),
            Data::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
            Data::U32(v) => le!(v),
            Data::I32(v) => le!(v),
            Data::F32(v) => le!(v),
            Data::U64(v) => le!(v),
            Data::I64(v) => le!(v),
            Data::F64(v) => le!(v),
            Data::Bytes(v) => {
                for b in v {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
    }

    /// Encodes the raw form (see [`Data::from_raw`]).
    pub fn to_raw(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw_len());
        self.write_raw(&mut out);
        out
    }
}

/// A JSON error without serde's position suffix when the message is ours.
fn json_error(e: &serde_json::Error) -> String {
    format!("invalid data: {e}")
}

/// Deeper nesting than any real tensor.
const MAX_DEPTH: usize = 64;

/// Pushes the leaves of (nested) JSON arrays into typed data.
struct Leaves<'d> {
    data: &'d mut Data,
    expected: usize,
    depth: usize,
}

#[derive(Clone, Copy)]
enum Leaf<'a> {
    I(i64),
    U(u64),
    F(f64),
    B(bool),
    S(&'a str),
}

impl std::fmt::Display for Leaf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leaf::I(v) => write!(f, "{v}"),
            Leaf::U(v) => write!(f, "{v}"),
            Leaf::F(v) => write!(f, "{v}"),
            Leaf::B(v) => write!(f, "{v}"),
            Leaf::S(v) => f.write_str(&crate::error::shown(v)),
        }
    }
}

impl Leaves<'_> {
    fn push<E: serde::de::Error>(self, leaf: Leaf<'_>) -> Result<(), E> {
        if self.data.len() >= self.expected {
            return Err(E::custom(format!(
                "data has more elements than the shape asks for ({})",
                self.expected
            )));
        }
        let dt = self.data.datatype();
        let bad = || E::custom(format!("{leaf} is not a valid {dt} value"));
        macro_rules! int {
            ($v:expr) => {
                match leaf {
                    Leaf::I(i) => $v.push(i.try_into().map_err(|_| bad())?),
                    Leaf::U(u) => $v.push(u.try_into().map_err(|_| bad())?),
                    _ => return Err(bad()),
                }
            };
        }
        let float = || match leaf {
            Leaf::I(i) => Ok(i as f64),
            Leaf::U(u) => Ok(u as f64),
            Leaf::F(f) => Ok(f),
            _ => Err(bad()),
        };
        match self.data {
            Data::Bool(v) => match leaf {
                Leaf::B(b) => v.push(b),
                _ => return Err(bad()),
            },
            Data::U8(v) => int!(v),
            Data::U16(v) => int!(v),
            Data::U32(v) => int!(v),
            Data::U64(v) => int!(v),
            Data::I8(v) => int!(v),
            Data::I16(v) => int!(v),
            Data::I32(v) => int!(v),
            Data::I64(v) => int!(v),
            Data::F32(v) => {
                let x = float()? as f32;
                if !x.is_finite() {
                    return Err(E::custom(format!("{leaf} is out of the FP32 range")));
                }
                v.push(x)
            }
            Data::F64(v) => v.push(float()?),
            Data::Bytes(v) => match leaf {
                Leaf::S(s) => v.push(s.as_bytes().to_vec()),
                _ => return Err(E::custom(format!("{leaf} is not a valid BYTES value (a string)"))),
            },
            Data::F16(_) => return Err(bad()),
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Leaves<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Leaves<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(serde::de::Error::custom("data is nested too deeply"));
        }
        let (data, expected, depth) = (self.data, self.expected, self.depth + 1);
        while seq.next_element_seed(Leaves { data: &mut *data, expected, depth })?.is_some() {}
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Leaf::I(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Leaf::U(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Leaf::F(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Leaf::B(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Leaf::S(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(format!("null is not a valid {} value", self.data.datatype())))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom("data must hold numbers, booleans or strings, not objects"))
    }
}

/// The elements as a flat JSON array: non-finite floats become `null`, BYTES become strings (lossy UTF-8).
impl serde::Serialize for Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Bool(v) => s.collect_seq(v),
            Data::U8(v) => s.collect_seq(v),
            Data::U16(v) => s.collect_seq(v),
            Data::U32(v) => s.collect_seq(v),
            Data::U64(v) => s.collect_seq(v),
            Data::I8(v) => s.collect_seq(v),
            Data::I16(v) => s.collect_seq(v),
            Data::I32(v) => s.collect_seq(v),
            Data::I64(v) => s.collect_seq(v),
            Data::F16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            Data::F32(v) => s.collect_seq(v),
            Data::F64(v) => s.collect_seq(v),
            Data::Bytes(v) => s.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b))),
        }
    }
}

impl Data {
    /// The most bytes this data takes as a JSON array (for charging a response before it is encoded).
    pub fn json_bytes_bound(&self) -> usize {
        let per = |n: usize, chars: usize| n.saturating_mul(chars + 1);
        match self {
            Data::Bool(v) => per(v.len(), 5),
            Data::U8(v) => per(v.len(), 3),
            Data::I8(v) => per(v.len(), 4),
            Data::U16(v) => per(v.len(), 5),
            Data::I16(v) => per(v.len(), 6),
            Data::U32(v) => per(v.len(), 10),
            Data::I32(v) => per(v.len(), 11),
            Data::U64(v) => per(v.len(), 20),
            Data::I64(v) => per(v.len(), 20),
            Data::F16(v) => per(v.len(), 16),
            Data::F32(v) => per(v.len(), 16),
            Data::F64(v) => per(v.len(), 24),
            // A byte may become a 6-character escape; quotes and comma around each element.
            Data::Bytes(v) => v.iter().map(|b| b.len() * 6 + 3).sum(),
        }
        .saturating_add(2)
    }
}

/// Bytes of memory `n` decoded elements of `datatype` take, with `content` bytes of BYTES data (see
/// [`crate::limits::BYTES_ELEMENT_OVERHEAD`]).
pub fn decoded_bytes(datatype: DataType, n: usize, content: usize) -> usize {
    match datatype.size() {
        Some(size) => n.saturating_mul(size),
        None => n
            .saturating_mul(crate::limits::BYTES_ELEMENT_OVERHEAD)
            .saturating_add(content.saturating_mul(crate::limits::BYTES_COPIES)),
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
        let flat = Data::from_json(DataType::F32, "[1, 2.5, 3, 4]", 4).unwrap();
        let nested = Data::from_json(DataType::F32, "[[1, 2.5], [3, 4]]", 4).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat, Data::F32(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn json_refuses_wrong_types_counts_and_ranges() {
        let err =
            |dt, v: serde_json::Value, n| Data::from_json(dt, &v.to_string(), n).unwrap_err().to_string();
        assert!(err(DataType::I64, json!([1.5]), 1).contains("not a valid INT64"));
        assert!(err(DataType::U8, json!([256]), 1).contains("not a valid UINT8"));
        assert!(err(DataType::U32, json!([-1]), 1).contains("not a valid UINT32"));
        assert!(err(DataType::Bool, json!([1]), 1).contains("not a valid BOOL"));
        assert!(err(DataType::F32, json!(["x"]), 1).contains("not a valid FP32"));
        assert!(err(DataType::Bytes, json!([1]), 1).contains("not a valid BYTES"));
        assert!(err(DataType::F32, json!([1, 2]), 3).contains("2 elements but the shape asks for 3"));
        assert!(err(DataType::F32, json!([{"a": 1}]), 1).contains("not objects"));
        assert!(err(DataType::F16, json!([1]), 1).contains("binary"));
        assert!(err(DataType::F32, json!([1e39]), 1).contains("out of the FP32 range"));
        assert!(
            err(DataType::F32, json!([1, 2, 3]), 2).contains("more elements than the shape asks for (2)")
        );
        assert!(err(DataType::F32, json!([null]), 1).contains("null is not a valid FP32"));
        assert!(err(DataType::I64, json!([[[1]]]), 1 << 40).contains("fewer elements"));
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(
            Data::from_json(DataType::F32, &deep, 1).unwrap_err().to_string().contains("nested too deeply")
        );
        assert!(Data::from_json(DataType::F32, "[1] x", 1).is_err(), "trailing characters");
        // FP64 keeps what FP32 cannot hold; BYTES keep their text.
        assert_eq!(Data::from_json(DataType::F64, "[1e39]", 1).unwrap(), Data::F64(vec![1e39]));
        assert_eq!(
            Data::from_json(DataType::Bytes, r#"["a\u00e9"]"#, 1).unwrap(),
            Data::Bytes(vec!["aé".into()])
        );
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
    fn json_output_is_a_flat_array_with_null_for_non_finite_floats() {
        let out = |d: Data| serde_json::to_string(&d).unwrap();
        assert_eq!(out(Data::F32(vec![0.1, f32::NAN, f32::INFINITY])), "[0.1,null,null]");
        assert_eq!(out(Data::Bytes(vec![b"a".to_vec(), vec![0xff]])), "[\"a\",\"\u{fffd}\"]");
        assert_eq!(out(Data::Bool(vec![true])), "[true]");
        for d in
            [Data::F32(vec![-1.234_567_9e-30; 3]), Data::I64(vec![i64::MIN; 2]), Data::Bool(vec![false; 4])]
        {
            assert!(out(d.clone()).len() <= d.json_bytes_bound(), "{d:?}");
        }
    }

    #[test]
    fn raw_refuses_bad_lengths() {
        assert!(Data::from_raw(DataType::F32, &[0; 7], 2).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[1, 0], 1).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[0, 0, 0, 0], 2).is_err());
        assert!(
            Data::from_raw(DataType::Bytes, &[0, 0, 0, 0, 0, 0, 0, 0], 1).is_err(),
            "more elements than asked"
        );
        // Sizes that would overflow or claim far more than was sent allocate nothing.
        assert!(Data::from_raw(DataType::I64, &[], 1 << 60).is_err());
        assert!(Data::from_raw(DataType::I64, &[0; 16], usize::MAX / 4).is_err());
        assert!(Data::from_raw(DataType::Bytes, &[], 1 << 43).is_err());
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
