//! An ONNX model's signature read from the file itself: the graph's inputs (less its initializers) and
//! outputs, with Open Inference Protocol datatypes and shapes (`-1` for a dimension without a size).
//!
//! A hand-written protobuf walk over `ModelProto.graph`, seeking past everything else (the weights), so a
//! multi-gigabyte model costs a few reads, not its size in memory.

use serde::Serialize;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// One input or output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tensor {
    pub name: String,
    /// `FP32`, `INT64`, `BYTES`, ... (or `SEQUENCE`, `MAP`, `OPTIONAL` for non-tensor values).
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Signature {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// The largest input or output description read (a name and a shape are far smaller).
const MAX_VALUE_INFO: u64 = 1 << 20;

/// The signature of the ONNX file at `path`, or why it is not an ONNX model.
pub fn signature(path: &Path) -> Result<Signature, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::new(file);
    let mut graph = None;
    while pos(&mut r)? < len {
        let (field, wire) = key(&mut r)?;
        if field == 7 && wire == 2 {
            let size = varint(&mut r)?;
            let end = pos(&mut r)?.saturating_add(size);
            graph = Some(read_graph(&mut r, end)?);
            r.seek(SeekFrom::Start(end)).map_err(|e| e.to_string())?;
        } else {
            skip(&mut r, wire)?;
        }
    }
    graph.ok_or_else(|| "not an ONNX model: no graph".to_string())
}

fn pos<R: Seek>(r: &mut R) -> Result<u64, String> {
    r.stream_position().map_err(|e| e.to_string())
}

fn varint<R: Read>(r: &mut R) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        r.read_exact(&mut b).map_err(|_| "not an ONNX model: cut short".to_string())?;
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("not an ONNX model: a varint runs over 64 bits".into())
}

fn key<R: Read>(r: &mut R) -> Result<(u64, u8), String> {
    let k = varint(r)?;
    Ok((k >> 3, (k & 7) as u8))
}

fn skip<R: Read + Seek>(r: &mut R, wire: u8) -> Result<(), String> {
    let by = match wire {
        0 => return varint(r).map(drop),
        1 => 8,
        2 => varint(r)?,
        5 => 4,
        w => return Err(format!("not an ONNX model: wire type {w}")),
    };
    let by = i64::try_from(by).map_err(|_| "not an ONNX model: a field longer than any file".to_string())?;
    r.seek(SeekFrom::Current(by)).map(drop).map_err(|e| e.to_string())
}

/// `GraphProto`: inputs (11), outputs (12) and the initializers' names (5), which older exporters also list
/// as inputs.
fn read_graph<R: Read + Seek>(r: &mut R, end: u64) -> Result<Signature, String> {
    let (mut inputs, mut outputs, mut initializers) = (Vec::new(), Vec::new(), Vec::new());
    while pos(r)? < end {
        let (field, wire) = key(r)?;
        match (field, wire) {
            (11 | 12, 2) => {
                let size = varint(r)?;
                if size > MAX_VALUE_INFO {
                    return Err(format!("an input or output description of {size} bytes"));
                }
                let mut buf = vec![0u8; size as usize];
                r.read_exact(&mut buf).map_err(|_| "not an ONNX model: cut short".to_string())?;
                let t = value_info(&buf)?;
                if field == 11 { inputs.push(t) } else { outputs.push(t) }
            }
            (5, 2) => {
                let size = varint(r)?;
                let at = pos(r)?;
                let end = at.saturating_add(size);
                initializers.extend(tensor_name(r, end)?);
                r.seek(SeekFrom::Start(end)).map_err(|e| e.to_string())?;
            }
            _ => skip(r, wire)?,
        }
    }
    inputs.retain(|t: &Tensor| !initializers.contains(&t.name));
    Ok(Signature { inputs, outputs })
}

/// `TensorProto.name` (8), seeking past the data.
fn tensor_name<R: Read + Seek>(r: &mut R, end: u64) -> Result<Option<String>, String> {
    while pos(r)? < end {
        let (field, wire) = key(r)?;
        if field == 8 && wire == 2 {
            let size = varint(r)?.min(MAX_VALUE_INFO);
            let mut buf = vec![0u8; size as usize];
            r.read_exact(&mut buf).map_err(|_| "not an ONNX model: cut short".to_string())?;
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        skip(r, wire)?;
    }
    Ok(None)
}

/// One field of a message: its number, its varint value (0 for bytes) and its bytes (empty for varints).
type Field<'a> = (u64, u64, &'a [u8]);

/// The fields of a small message in `buf`.
fn fields(mut buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (field, wire) = key(&mut buf)?;
        match wire {
            0 => out.push((field, varint(&mut buf)?, &[][..])),
            2 => {
                let size = varint(&mut buf)? as usize;
                let (bytes, rest) = buf.split_at_checked(size).ok_or("not an ONNX model: cut short")?;
                out.push((field, 0, bytes));
                buf = rest;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or("not an ONNX model: cut short")?;
            }
            w => return Err(format!("not an ONNX model: wire type {w}")),
        }
    }
    Ok(out)
}

/// `ValueInfoProto`: name (1) and type (2).
fn value_info(buf: &[u8]) -> Result<Tensor, String> {
    let mut t = Tensor { name: String::new(), datatype: "UNKNOWN".into(), shape: Vec::new() };
    for (field, _, bytes) in fields(buf)? {
        match field {
            1 => t.name = String::from_utf8_lossy(bytes).into_owned(),
            2 => (t.datatype, t.shape) = type_proto(bytes)?,
            _ => {}
        }
    }
    Ok(t)
}

/// `TypeProto`: a tensor (1: elem_type, shape), or a sequence (4), map (5) or optional (9).
fn type_proto(buf: &[u8]) -> Result<(String, Vec<i64>), String> {
    for (field, _, bytes) in fields(buf)? {
        match field {
            1 => {
                let (mut datatype, mut shape) = ("UNKNOWN".to_string(), Vec::new());
                for (f, v, b) in fields(bytes)? {
                    match f {
                        1 => datatype = datatype_of(v).to_string(),
                        2 => shape = dims(b)?,
                        _ => {}
                    }
                }
                return Ok((datatype, shape));
            }
            4 => return Ok(("SEQUENCE".into(), Vec::new())),
            5 => return Ok(("MAP".into(), Vec::new())),
            9 => return Ok(("OPTIONAL".into(), Vec::new())),
            _ => {}
        }
    }
    Ok(("UNKNOWN".into(), Vec::new()))
}

/// `TensorShapeProto`: each dim (1) a `dim_value` (1) or a named, unsized `dim_param` (2) shown as -1.
fn dims(buf: &[u8]) -> Result<Vec<i64>, String> {
    let mut shape = Vec::new();
    for (field, _, dim) in fields(buf)? {
        if field == 1 {
            let value = fields(dim)?.into_iter().find(|(f, _, _)| *f == 1).map(|(_, v, _)| v as i64);
            shape.push(value.unwrap_or(-1));
        }
    }
    Ok(shape)
}

/// ONNX `TensorProto.DataType` as an Open Inference Protocol datatype.
fn datatype_of(elem_type: u64) -> &'static str {
    match elem_type {
        1 => "FP32",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "BYTES",
        9 => "BOOL",
        10 => "FP16",
        11 => "FP64",
        12 => "UINT32",
        13 => "UINT64",
        16 => "BF16",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_onnx_are_refused_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        for (i, bytes) in
            [&b""[..], b"a,b\n1,2\n", &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f], &[0x08; 40]].iter().enumerate()
        {
            let p = dir.path().join(format!("{i}"));
            std::fs::write(&p, bytes).unwrap();
            assert!(signature(&p).is_err(), "{bytes:?}");
        }
    }
}
