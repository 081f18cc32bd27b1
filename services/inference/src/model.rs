//! The model: ONNX Runtime sessions and the model's signature, with every request checked against the
//! signature before ONNX Runtime sees it.

use crate::error::{InferError, shown};
use crate::limits::Reservation;
use crate::tensor::{Data, DataType, Tensor, element_count};
use half::f16;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorElementType, ValueType};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One input or output of the model. `-1` marks a variable dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// The model's name, version and signature.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub inputs: Vec<TensorSpec>,
    /// Tensor outputs only: non-tensor outputs (such as scikit-learn's ZipMap) cannot travel over the
    /// protocol, so they are neither listed nor computed.
    pub outputs: Vec<TensorSpec>,
    /// Every input and output has a variable first dimension, so requests can be joined along it.
    pub batchable: bool,
}

impl ModelInfo {
    /// Bytes of the served outputs for `rows` rows (the whole output when the model is not batchable), when
    /// the signature fixes them: every dimension past the batch one known, and no BYTES.
    pub fn output_bytes(&self, rows: usize) -> Option<usize> {
        self.outputs.iter().try_fold(0usize, |acc, spec| {
            let size = spec.datatype.size()?;
            let dims = if self.batchable { spec.shape.get(1..)? } else { &spec.shape[..] };
            let per_row = dims.iter().try_fold(size, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
            let rows = if self.batchable { rows } else { 1 };
            acc.checked_add(per_row.checked_mul(rows)?)
        })
    }
}

/// A checked request: inputs in the model's input order, and the indexes of the outputs to return.
pub struct Checked {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<usize>,
    /// Rows along the first dimension (1 when the model is not batchable).
    pub rows: usize,
    /// The inputs' share of the memory budget, given back when the run is done with them (or skipped).
    pub held: Option<Reservation>,
}

/// Whether `name` and `version` (empty: any) address the model served as `served`/`served_version`.
pub fn addresses(served: &str, served_version: &str, name: &str, version: &str) -> Result<(), InferError> {
    if name != served {
        return Err(InferError::not_found(format!(
            "unknown model {}; this server serves {served:?}",
            shown(name)
        )));
    }
    if !version.is_empty() && version != served_version {
        return Err(InferError::not_found(format!(
            "unknown version {} of model {}; this server serves version {served_version:?}",
            shown(version),
            shown(name)
        )));
    }
    Ok(())
}

impl ModelInfo {
    /// Checks one declared input (name, datatype, shape) against the signature before its data is decoded;
    /// returns the input's position and its element count.
    pub fn check_declared(
        &self,
        name: &str,
        datatype: DataType,
        shape: &[i64],
    ) -> Result<(usize, usize), InferError> {
        let i = self.inputs.iter().position(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            InferError::invalid(format!("unknown input {}; the model takes {names:?}", shown(name)))
        })?;
        let spec = &self.inputs[i];
        if datatype != spec.datatype {
            return Err(InferError::invalid(format!(
                "input {name:?} has datatype {datatype}, the model takes {}",
                spec.datatype
            )));
        }
        let fits = shape.len() == spec.shape.len()
            && shape.iter().zip(&spec.shape).all(|(&got, &want)| want < 0 || got == want);
        if !fits {
            return Err(InferError::invalid(format!(
                "input {name:?} has shape {shape:?}, the model takes {:?} (-1: any size)",
                spec.shape
            )));
        }
        let n = element_count(shape)?;
        if n == 0 {
            return Err(InferError::invalid(format!(
                "input {name:?} has shape {shape:?}: no elements to infer on"
            )));
        }
        Ok((i, n))
    }

    /// Checks names, datatypes, shapes and element counts against the signature, and orders the inputs.
    pub fn check(&self, inputs: Vec<Tensor>, requested: &[String]) -> Result<Checked, InferError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for t in inputs {
            let (i, n) = self.check_declared(&t.name, t.datatype(), &t.shape)?;
            let spec = &self.inputs[i];
            if n != t.data.len() {
                return Err(InferError::invalid(format!(
                    "input {:?} has {} elements for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                )));
            }
            if slots[i].replace(t).is_some() {
                return Err(InferError::invalid(format!("input {:?} is given twice", spec.name)));
            }
        }
        let missing: Vec<&str> = self
            .inputs
            .iter()
            .zip(&slots)
            .filter(|(_, t)| t.is_none())
            .map(|(s, _)| s.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(InferError::invalid(format!("missing inputs {missing:?}")));
        }
        let inputs: Vec<Tensor> = slots.into_iter().flatten().collect();
        let rows = if self.batchable {
            inputs.first().and_then(|t| t.shape.first()).copied().unwrap_or(1)
        } else {
            1
        };
        if self.batchable && inputs.iter().any(|t| t.shape.first() != Some(&rows)) {
            return Err(InferError::invalid("all inputs must have the same first (batch) dimension"));
        }
        let outputs = if requested.is_empty() {
            (0..self.outputs.len()).collect()
        } else {
            requested
                .iter()
                .map(|name| {
                    self.outputs.iter().position(|o| &o.name == name).ok_or_else(|| {
                        let names: Vec<&str> = self.outputs.iter().map(|s| s.name.as_str()).collect();
                        InferError::invalid(format!(
                            "unknown output {}; the model has {names:?}",
                            shown(name)
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Checked { inputs, outputs, rows: rows.max(0) as usize, held: None })
    }
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Loads the ONNX Runtime shared library (from `dylib`, else `ORT_DYLIB_PATH`) once per process.
pub fn init_runtime(dylib: Option<&Path>) -> anyhow::Result<ort::environment::Environment> {
    let path = match dylib {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("ORT_DYLIB_PATH").map(Into::into).ok_or_else(|| {
            anyhow::anyhow!(
                "ONNX Runtime not found: pass --ort-dylib-path or set ORT_DYLIB_PATH to libonnxruntime.so"
            )
        })?,
    };
    let env = ort::init_from(&path)
        .map_err(|e| anyhow::anyhow!("loading ONNX Runtime from {}: {e}", path.display()))?
        .with_name("mizzen-serve")
        .build()
        .map_err(|e| anyhow::anyhow!("starting ONNX Runtime: {e}"))?;
    Ok(env)
}

/// Session settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// Let ONNX Runtime's pool threads spin between runs. Off by default: on a few cores, spinning threads
    /// take the CPU the HTTP and gRPC front ends need, and a batcher waiting for company gains nothing.
    pub spinning: bool,
}

/// One ONNX Runtime session; `run` needs `&mut`, so each worker owns one.
pub struct Runner {
    session: Session,
    /// Without selected outputs, run options are `Sync`: the watchdog thread can stop a run at its deadline.
    options: Arc<RunOptions>,
    watchdog: Arc<Watchdog>,
    slot: usize,
}

/// A run under watch; the watch ends when this drops (also when the run panics).
struct Armed {
    dog: Arc<Watchdog>,
    slot: usize,
}

impl Armed {
    /// Ends the watch; true if the run was stopped at its deadline.
    fn end(self) -> bool {
        let stopped = self.dog.disarm(self.slot);
        std::mem::forget(self);
        stopped
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.dog.disarm(self.slot);
    }
}

/// Stops runs that pass their deadline: one thread for all of a model's sessions, woken only when a run's
/// deadline is earlier than the one it sleeps toward.
pub struct Watchdog {
    state: Mutex<WatchState>,
    wake: Condvar,
}

struct WatchState {
    /// Per runner: its run options, the deadline of the run in progress, and whether it was stopped.
    slots: Vec<(Arc<RunOptions>, Option<Instant>, bool)>,
    /// The deadline the watchdog sleeps toward, if any.
    sleeping_until: Option<Instant>,
}

impl Watchdog {
    fn start(options: Vec<Arc<RunOptions>>) -> Arc<Self> {
        let dog = Arc::new(Self {
            state: Mutex::new(WatchState {
                slots: options.into_iter().map(|o| (o, None, false)).collect(),
                sleeping_until: None,
            }),
            wake: Condvar::new(),
        });
        let weak = Arc::downgrade(&dog);
        let spawned = std::thread::Builder::new().name("run-watchdog".into()).spawn(move || {
            while let Some(dog) = weak.upgrade() {
                if !dog.watch_once() {
                    return;
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(%e, "cannot start the run watchdog; runs will not be stopped at their deadline");
        }
        dog
    }

    /// Stops expired runs, then sleeps until the next deadline (at most a second, so the thread notices
    /// when the model is dropped). False once the state is poisoned.
    fn watch_once(&self) -> bool {
        let Ok(mut st) = self.state.lock() else { return false };
        let now = Instant::now();
        for (options, deadline, fired) in &mut st.slots {
            if deadline.is_some_and(|d| d <= now) {
                let _ = options.terminate();
                *deadline = None;
                *fired = true;
            }
        }
        let next = st.slots.iter().filter_map(|s| s.1).min();
        let until = next.unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
        st.sleeping_until = next;
        self.wake.wait_timeout(st, until.saturating_duration_since(now)).is_ok()
    }

    /// Watches `slot`'s run until the returned guard ends the watch.
    fn arm(self: &Arc<Self>, slot: usize, deadline: Instant) -> Armed {
        let armed = Armed { dog: self.clone(), slot };
        let Ok(mut st) = self.state.lock() else { return armed };
        let (options, armed_until, fired) = &mut st.slots[slot];
        if std::mem::take(fired) {
            let _ = options.unterminate();
        }
        *armed_until = Some(deadline);
        if st.sleeping_until.is_none_or(|s| deadline < s) {
            st.sleeping_until = Some(deadline);
            self.wake.notify_one();
        }
        armed
    }

    /// Ends the watch of `slot`'s run; true if the watchdog stopped it. The terminate flag is cleared either
    /// way, so the next run starts clean.
    fn disarm(&self, slot: usize) -> bool {
        let Ok(mut st) = self.state.lock() else { return false };
        let (options, deadline, fired) = &mut st.slots[slot];
        *deadline = None;
        if std::mem::take(fired) {
            // The flag stays set until cleared, and would stop the next run at once.
            let _ = options.unterminate();
            return true;
        }
        false
    }
}

fn build_session(
    env: &ort::environment::Environment,
    bytes: &[u8],
    cfg: &SessionConfig,
) -> ort::Result<Session> {
    // The builder's error type is not Send; `?` converts each step into the plain `ort::Error`.
    let session = Session::builder(env)?
        .with_intra_threads(cfg.intra_op_threads)?
        .with_inter_threads(cfg.inter_op_threads)?
        .with_intra_op_spinning(cfg.spinning)?
        .with_inter_op_spinning(cfg.spinning)?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .commit_from_memory(bytes)?;
    Ok(session)
}

fn spec_of(name: &str, ty: &ValueType) -> Result<TensorSpec, String> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => match datatype_of(*ty) {
            Some(datatype) => Ok(TensorSpec { name: name.to_string(), datatype, shape: shape.to_vec() }),
            None => Err(format!("{name}: element type {ty} is not supported by the protocol")),
        },
        other => Err(format!("{name}: {other} is not a tensor")),
    }
}

/// Builds `workers` sessions from the ONNX bytes and reads the signature.
pub fn load(
    env: &ort::environment::Environment,
    bytes: &[u8],
    cfg: &SessionConfig,
    workers: usize,
    name: &str,
    version: &str,
) -> anyhow::Result<(ModelInfo, Vec<Runner>)> {
    let first = build_session(env, bytes, cfg).map_err(|e| anyhow::anyhow!("loading the model: {e}"))?;
    let inputs = first
        .inputs()
        .iter()
        .map(|i| spec_of(i.name(), i.dtype()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("unsupported model input {e}"))?;
    let mut outputs = Vec::new();
    for o in first.outputs() {
        match spec_of(o.name(), o.dtype()) {
            Ok(spec) => outputs.push(spec),
            Err(why) => tracing::warn!(output = o.name(), %why, "output not served"),
        }
    }
    if outputs.is_empty() {
        anyhow::bail!("the model has no tensor outputs the protocol can carry");
    }
    let batchable = inputs.iter().chain(&outputs).all(|s| s.shape.first().is_some_and(|&d| d < 0));
    let info = ModelInfo { name: name.into(), version: version.into(), inputs, outputs, batchable };
    let mut sessions = vec![first];
    for _ in 1..workers.max(1) {
        sessions.push(build_session(env, bytes, cfg).map_err(|e| anyhow::anyhow!("loading the model: {e}"))?);
    }
    let options = sessions
        .iter()
        .map(|_| RunOptions::new().map(Arc::new).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let watchdog = Watchdog::start(options.clone());
    let runners = sessions
        .into_iter()
        .zip(options)
        .enumerate()
        .map(|(slot, (session, options))| Runner { session, options, watchdog: watchdog.clone(), slot })
        .collect();
    Ok((info, runners))
}

impl Runner {
    /// Runs checked inputs (in the model's input order) and returns every served output, in order. A run
    /// still going at `deadline` is stopped and answered 503.
    pub fn run(
        &mut self,
        info: &ModelInfo,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, InferError> {
        let timed_out = |what: &str| {
            InferError::unavailable(format!("{what} the request's deadline (--request-timeout-ms)"))
                .counted_as("timeout")
        };
        let mut feeds: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            let name = t.name.clone();
            feeds.push((name, to_ort(t)?));
        }
        let armed = match deadline {
            Some(deadline) if deadline <= Instant::now() => {
                return Err(timed_out("the run would have started after"));
            }
            Some(deadline) => Some(self.watchdog.arm(self.slot, deadline)),
            None => None,
        };
        let outputs = self.session.run_with_options(feeds, &*self.options);
        if armed.is_some_and(Armed::end) {
            return Err(timed_out("the run was stopped at"));
        }
        let outputs = outputs.map_err(run_error)?;
        info.outputs
            .iter()
            .map(|spec| {
                let value = outputs.get(spec.name.as_str()).ok_or_else(|| {
                    InferError::internal(format!("ONNX Runtime returned no output {:?}", spec.name))
                })?;
                from_ort(&spec.name, value)
            })
            .collect()
    }
}

/// Input problems ONNX Runtime finds that the signature check cannot (constraints inside the graph) are
/// the caller's; anything else is ours.
fn run_error(e: ort::Error) -> InferError {
    let msg = e.to_string();
    if e.code() == ort::error::ErrorCode::InvalidArgument
        || msg.contains("Got invalid dimensions")
        || msg.contains("Unexpected input data type")
        || msg.contains("nul byte")
    {
        InferError::invalid(msg)
    } else {
        InferError::internal(format!("ONNX Runtime: {msg}"))
    }
}

fn to_ort(t: Tensor) -> Result<DynValue, InferError> {
    let shape = t.shape;
    let err = |e: ort::Error| InferError::internal(format!("building input {:?}: {e}", t.name));
    macro_rules! arr {
        ($v:expr) => {
            ort::value::Tensor::from_array((shape, $v)).map(|x| x.into_dyn()).map_err(err)
        };
    }
    match t.data {
        Data::Bool(v) => arr!(v),
        Data::U8(v) => arr!(v),
        Data::U16(v) => arr!(v),
        Data::U32(v) => arr!(v),
        Data::U64(v) => arr!(v),
        Data::I8(v) => arr!(v),
        Data::I16(v) => arr!(v),
        Data::I32(v) => arr!(v),
        Data::I64(v) => arr!(v),
        Data::F16(v) => arr!(v),
        Data::F32(v) => arr!(v),
        Data::F64(v) => arr!(v),
        Data::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(|b| {
                    let s = String::from_utf8(b).map_err(|_| {
                        InferError::invalid(format!("input {:?}: BYTES must be UTF-8 for this model", t.name))
                    })?;
                    if s.contains('\0') {
                        return Err(InferError::invalid(format!(
                            "input {:?}: a string holds a NUL byte",
                            t.name
                        )));
                    }
                    Ok(s)
                })
                .collect::<Result<Vec<String>, _>>()?;
            ort::value::Tensor::from_string_array((shape, strings.as_slice()))
                .map(|x| x.into_dyn())
                .map_err(err)
        }
    }
}

fn from_ort(name: &str, v: &DynValue) -> Result<Tensor, InferError> {
    let err = |e: ort::Error| InferError::internal(format!("reading output {name:?}: {e}"));
    let (ty, shape) = match v.dtype() {
        ValueType::Tensor { ty, shape, .. } => (*ty, shape.to_vec()),
        other => return Err(InferError::internal(format!("output {name:?} is {other}, not a tensor"))),
    };
    macro_rules! ext {
        ($var:ident, $t:ty) => {
            Data::$var(v.try_extract_tensor::<$t>().map_err(err)?.1.to_vec())
        };
    }
    let data = match ty {
        TensorElementType::Bool => ext!(Bool, bool),
        TensorElementType::Uint8 => ext!(U8, u8),
        TensorElementType::Uint16 => ext!(U16, u16),
        TensorElementType::Uint32 => ext!(U32, u32),
        TensorElementType::Uint64 => ext!(U64, u64),
        TensorElementType::Int8 => ext!(I8, i8),
        TensorElementType::Int16 => ext!(I16, i16),
        TensorElementType::Int32 => ext!(I32, i32),
        TensorElementType::Int64 => ext!(I64, i64),
        TensorElementType::Float16 => ext!(F16, f16),
        TensorElementType::Float32 => ext!(F32, f32),
        TensorElementType::Float64 => ext!(F64, f64),
        TensorElementType::String => {
            Data::Bytes(v.try_extract_strings().map_err(err)?.1.into_iter().map(String::into_bytes).collect())
        }
        other => return Err(InferError::internal(format!("output {name:?} has unsupported type {other}"))),
    };
    Ok(Tensor { name: name.to_string(), shape, data })
}

/// Whether a run of [`warmup_inputs`] (one row) takes at most `limit` once warm: the first of up to five
/// runs that does says yes (the machine's noise only adds). A run ten times over the limit says no at
/// once, so a large model is not run again and again at start; so does a run that fails.
pub fn runs_within(info: &ModelInfo, runner: &mut Runner, limit: std::time::Duration) -> bool {
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let ok = runner.run(info, warmup_inputs(info), None).is_ok();
        let took = t.elapsed();
        if !ok || took > limit.saturating_mul(10) {
            return false;
        }
        if took <= limit {
            return true;
        }
    }
    false
}

/// Inputs of the right types and shapes (variable dimensions as 1), zeros, for the warm-up run.
pub fn warmup_inputs(info: &ModelInfo) -> Vec<Tensor> {
    info.inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
            let n = element_count(&shape).unwrap_or(0);
            let data = Data::zeros(spec.datatype, n);
            Tensor { name: spec.name.clone(), shape, data }
        })
        .collect()
}
