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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;
    use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    use proptest::prelude::*;
    use prost::Message;
    use std::collections::HashMap;

    /// The heap a decoded request holds, from its vectors' and strings' capacities (maps: their entries).
    fn heap(r: &pb::ModelInferRequest) -> usize {
        let params = |p: &HashMap<String, pb::InferParameter>| -> usize {
            p.iter()
                .map(|(k, v)| {
                    let s = match &v.parameter_choice {
                        Some(pb::infer_parameter::ParameterChoice::StringParam(s)) => s.capacity(),
                        _ => 0,
                    };
                    k.capacity() + s + 64
                })
                .sum()
        };
        let contents = |c: &pb::InferTensorContents| {
            c.bool_contents.capacity()
                + 4 * (c.int_contents.capacity() + c.uint_contents.capacity() + c.fp32_contents.capacity())
                + 8 * (c.int64_contents.capacity()
                    + c.uint64_contents.capacity()
                    + c.fp64_contents.capacity())
                + c.bytes_contents.iter().map(|b| b.capacity() + 24).sum::<usize>()
        };
        r.model_name.capacity()
            + r.model_version.capacity()
            + r.id.capacity()
            + params(&r.parameters)
            + r.inputs
                .iter()
                .map(|i| {
                    i.name.capacity()
                        + i.datatype.capacity()
                        + 8 * i.shape.capacity()
                        + params(&i.parameters)
                        + i.contents.as_ref().map_or(0, contents)
                        + std::mem::size_of::<InferInputTensor>()
                })
                .sum::<usize>()
            + r.outputs
                .iter()
                .map(|o| {
                    o.name.capacity()
                        + params(&o.parameters)
                        + std::mem::size_of::<InferRequestedOutputTensor>()
                })
                .sum::<usize>()
            + r.raw_input_contents.iter().map(|b| b.len() + 32).sum::<usize>()
    }

    fn param() -> impl Strategy<Value = pb::InferParameter> {
        use pb::infer_parameter::ParameterChoice as P;
        prop_oneof![
            any::<bool>().prop_map(P::BoolParam),
            any::<i64>().prop_map(P::Int64Param),
            ".{0,20}".prop_map(P::StringParam),
        ]
        .prop_map(|c| pb::InferParameter { parameter_choice: Some(c) })
    }

    fn params() -> impl Strategy<Value = HashMap<String, pb::InferParameter>> {
        proptest::collection::hash_map(".{0,8}", param(), 0..4)
    }

    fn contents() -> impl Strategy<Value = pb::InferTensorContents> {
        let v = |n| proptest::collection::vec(any::<i64>(), 0..n);
        (
            proptest::collection::vec(any::<bool>(), 0..50),
            proptest::collection::vec(any::<i32>(), 0..50),
            v(50),
            proptest::collection::vec(0u32..3, 0..300),
            proptest::collection::vec(any::<f32>(), 0..50),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..4), 0..200),
        )
            .prop_map(|(b, i, i64s, u, f, bytes)| pb::InferTensorContents {
                bool_contents: b,
                int_contents: i,
                int64_contents: i64s,
                uint_contents: u,
                uint64_contents: vec![0; 3],
                fp32_contents: f,
                fp64_contents: vec![1.0],
                bytes_contents: bytes,
            })
    }

    fn requests() -> impl Strategy<Value = pb::ModelInferRequest> {
        let input = (
            ".{0,10}",
            prop::sample::select(vec!["FP32", "BYTES", "INT64", "x"]),
            proptest::collection::vec(0i64..1000, 0..5),
            params(),
            proptest::option::of(contents()),
        )
            .prop_map(|(name, dt, shape, parameters, contents)| InferInputTensor {
                name,
                datatype: dt.into(),
                shape,
                parameters,
                contents,
            });
        let output = (".{0,10}", params())
            .prop_map(|(name, parameters)| InferRequestedOutputTensor { name, parameters });
        (
            ".{0,10}",
            params(),
            proptest::collection::vec(input, 0..4),
            proptest::collection::vec(output, 0..100),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
        )
            .prop_map(|(id, parameters, inputs, outputs, raw)| pb::ModelInferRequest {
                model_name: "m".into(),
                model_version: String::new(),
                id,
                parameters,
                inputs,
                outputs,
                raw_input_contents: raw.into_iter().map(bytes::Bytes::from).collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        /// The cost read from the wire covers what prost really allocates when it decodes the message.
        #[test]
        fn the_wire_cost_covers_the_decoded_heap(r in requests()) {
            let bytes = r.encode_to_vec();
            let cost = decoded_cost(&bytes).unwrap();
            let decoded = pb::ModelInferRequest::decode(&bytes[..]).unwrap();
            prop_assert!(cost >= heap(&decoded), "cost {} < heap {}", cost, heap(&decoded));
        }

        /// Any bytes: the scan and prost agree on what is malformed, and nothing panics.
        #[test]
        fn any_bytes_are_scanned_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let scanned = decoded_cost(&bytes);
            if let Ok(decoded) = pb::ModelInferRequest::decode(&bytes[..]) {
                prop_assert!(scanned.is_ok(), "prost decoded what the scan refused: {:?}", scanned);
                prop_assert!(scanned.unwrap() >= heap(&decoded));
            }
        }
    }

    #[test]
    fn thirty_million_empty_strings_cost_what_they_decode_to() {
        // 2 bytes on the wire each (tag, length 0); 24 bytes a vector slot once decoded, and more on their
        // way to ONNX Runtime.
        let contents = pb::InferTensorContents { bytes_contents: vec![vec![]; 1000], ..Default::default() };
        let input =
            InferInputTensor { datatype: "BYTES".into(), contents: Some(contents), ..Default::default() };
        let msg = pb::ModelInferRequest { inputs: vec![input], ..Default::default() }.encode_to_vec();
        assert!(msg.len() < 2020);
        let cost = decoded_cost(&msg).unwrap();
        assert!(cost >= 1000 * (24 + BYTES_ELEMENT_OVERHEAD), "{cost}");
        assert_eq!(decoded_cost(&[0x2a, 0x05, 0x00]), Err(Malformed("truncated length-delimited field")));
        assert_eq!(decoded_cost(&[0x03]), Err(Malformed("field number 0")));
    }
}
