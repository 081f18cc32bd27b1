//! The memory a gRPC `ModelInferRequest` will take once decoded, read from its protobuf wire bytes before
//! prost decodes it. A message's size says little about it: 30 million empty `bytes_contents` fit in 60 MB
//! and decode to 720 MB of vectors, a packed run of zeros decodes to eight bytes an element. The cost is an
//! upper bound of prost's vectors (with their growth slack), our tensors, a batch's joined copy, and for
//! BYTES the strings ONNX Runtime's API needs; the request reserves it from the budget first.

use crate::limits::{BYTES_COPIES, BYTES_ELEMENT_OVERHEAD};

/// The bytes are not a protobuf message.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A field's value on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint,
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(Malformed("truncated varint"))?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Malformed("varint longer than 10 bytes"))
}

/// Calls `f` with each field of `msg`.
fn fields<'a>(
    mut msg: &'a [u8],
    mut f: impl FnMut(u64, Wire<'a>) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err(Malformed("field number 0"));
        }
        let value = match wire_type {
            0 => varint(&mut msg).map(|_| Wire::Varint)?,
            1 => {
                msg = msg.get(8..).ok_or(Malformed("truncated fixed64"))?;
                Wire::Fixed64
            }
            5 => {
                msg = msg.get(4..).ok_or(Malformed("truncated fixed32"))?;
                Wire::Fixed32
            }
            2 => {
                let len = usize::try_from(varint(&mut msg)?).map_err(|_| Malformed("length too large"))?;
                let (payload, rest) =
                    msg.split_at_checked(len).ok_or(Malformed("truncated length-delimited field"))?;
                msg = rest;
                Wire::Bytes(payload)
            }
            _ => return Err(Malformed("unsupported wire type")),
        };
        f(field, value)?;
    }
    Ok(())
}

/// Heap of a decoded message struct, a string or a map entry beyond its bytes (an upper bound).
const MESSAGE: usize = 256;
const STRING: usize = 32;
const MAP_ENTRY: usize = 128;

/// Elements in a packed run of varints.
fn packed_varints(payload: &[u8]) -> usize {
    payload.iter().filter(|&&b| b < 0x80).count()
}

/// Decoded size of one element of each `InferTensorContents` field (1-7), and whether it travels as varint.
fn element(field: u64) -> Option<(usize, bool)> {
    Some(match field {
        1 => (1, true),
        2 | 4 => (4, true),
        3 | 5 => (8, true),
        6 => (4, false),
        7 => (8, false),
        _ => return None,
    })
}

fn map_entry(payload: &[u8]) -> usize {
    MAP_ENTRY + 2 * payload.len()
}

fn contents(msg: &[u8]) -> Result<usize, Malformed> {
    let mut cost = MESSAGE;
    fields(msg, |field, value| {
        cost = cost.saturating_add(match (field, value) {
            // prost's vector (up to twice its length while growing), moved into the tensor, plus a
            // batch's joined copy.
            (8, Wire::Bytes(b)) => 48 + b.len() + BYTES_ELEMENT_OVERHEAD + BYTES_COPIES * b.len(),
            (f, Wire::Bytes(b)) => match element(f) {
                Some((size, true)) => 3 * size * packed_varints(b),
                // Fixed-size elements decode to their wire size.
                Some((_, false)) => 3 * b.len(),
                None => 0,
            },
            (f, Wire::Varint | Wire::Fixed32 | Wire::Fixed64) => element(f).map_or(0, |(size, _)| 3 * size),
        });
        Ok(())
    })?;
    Ok(cost)
}

/// Cost of one `InferInputTensor`, and its datatype.
fn input(msg: &[u8]) -> Result<(usize, &[u8]), Malformed> {
    let mut cost = MESSAGE;
    let mut datatype: &[u8] = b"";
    fields(msg, |field, value| {
        cost = cost.saturating_add(match (field, value) {
            (1, Wire::Bytes(b)) => STRING + b.len(),
            (2, Wire::Bytes(b)) => {
                datatype = b;
                STRING + b.len()
            }
            (3, Wire::Bytes(b)) => 2 * 8 * packed_varints(b),
            (3, _) => 2 * 8,
            (4, Wire::Bytes(b)) => map_entry(b),
            (5, Wire::Bytes(b)) => contents(b)?,
            _ => 0,
        });
        Ok(())
    })?;
    Ok((cost, datatype))
}

fn output(msg: &[u8]) -> Result<usize, Malformed> {
    let mut cost = MESSAGE;
    fields(msg, |field, value| {
        cost = cost.saturating_add(match (field, value) {
            (1, Wire::Bytes(b)) => STRING + b.len(),
            (2, Wire::Bytes(b)) => map_entry(b),
            _ => 0,
        });
        Ok(())
    })?;
    Ok(cost)
}

/// Upper bound of the memory a `ModelInferRequest` takes from decoding to the end of its run (outputs
/// aside), read from its wire bytes.
pub fn decoded_cost(msg: &[u8]) -> Result<usize, Malformed> {
    let mut cost = MESSAGE;
    let mut datatypes: Vec<&[u8]> = Vec::new();
    let mut raws: Vec<usize> = Vec::new();
    fields(msg, |field, value| {
        cost = cost.saturating_add(match (field, value) {
            (1..=3, Wire::Bytes(b)) => STRING + b.len(),
            (4, Wire::Bytes(b)) => map_entry(b),
            (5, Wire::Bytes(b)) => {
                let (c, datatype) = input(b)?;
                datatypes.push(datatype);
                c
            }
            (6, Wire::Bytes(b)) => output(b)?,
            (7, Wire::Bytes(b)) => {
                raws.push(b.len());
                0
            }
            _ => 0,
        });
        Ok(())
    })?;
    for (i, &len) in raws.iter().enumerate() {
        // prost's copy, the typed tensor, a batch's joined copy; BYTES become strings on their way.
        cost = cost.saturating_add(48 + 3 * len);
        if datatypes.get(i).is_none_or(|d| *d == b"BYTES") {
            cost = cost.saturating_add((len / 4).saturating_mul(BYTES_ELEMENT_OVERHEAD) + BYTES_COPIES * len);
        }
    }
    Ok(cost)
}
