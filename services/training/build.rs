//! Compiles proto/onnx-ml.proto, vendored from the onnx Python package, into the ONNX message types with
//! protox (pure Rust, no protoc) and prost-build.
//!
//! `onnx-ml.proto` rather than `onnx.proto`: it is the ONNX_ML variant, the one the onnx Python package
//! compiles (`onnx.onnx_pb` is `onnx_ml_pb2`), and so what `onnx.checker` and skl2onnx read and write. In
//! onnx 1.23.2 the two files differ only in a comment, so either gives the same types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    let fds = protox::compile(["proto/onnx-ml.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
