//! Dynamic batching: concurrent requests are joined along the batch dimension into one ONNX Runtime run,
//! up to a maximum batch size and a maximum queue delay, and the results are split back. The queue is
//! bounded: when it is full a request is refused at once (503), so the server never grows without limit.

use crate::error::InferError;
use crate::metrics::Metrics;
use crate::model::{Checked, ModelInfo, Runner};
use crate::tensor::{Data, Tensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Batching settings.
#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub enabled: bool,
    /// Most rows in one run.
    pub max_batch_size: usize,
    /// Longest the first request of a batch waits for others.
    pub max_queue_delay: Duration,
    /// Most requests waiting.
    pub max_queue_size: usize,
}

pub type Reply = Result<Vec<Tensor>, InferError>;

struct Job {
    checked: Checked,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
    deadline: Instant,
}

/// Runs `f`, turning a panic into a 500 for the requests in it: a fault in one run never takes down a
/// worker, the process or a connection.
fn guarded(f: impl FnOnce() -> Reply) -> Reply {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("a model run panicked");
        Err(InferError::internal("the model run failed unexpectedly").counted_as("panic"))
    })
}

/// The queue in front of the model's workers, and the sessions they run on.
pub struct Batcher {
    tx: SyncSender<Job>,
    metrics: Metrics,
    info: Arc<ModelInfo>,
    runners: Arc<Vec<Mutex<Runner>>>,
    /// Requests running inline: in flight, but never joining a batch.
    inline: Arc<AtomicUsize>,
    config: BatchConfig,
    /// The most input bytes of a request that runs on the thread that parsed it, whatever else is in
    /// flight, when the model is quick: a hand-off to a model worker and back (two thread wake-ups) costs
    /// more than such a run, and joining such runs saves less than the hand-off costs.
    quick_bytes: Option<usize>,
}

/// A quick request's inputs are at most this many times the one-row warm-up's (by their raw size, so a
/// variable dimension or a long string cannot make a "few rows" long).
const QUICK_ROWS: usize = 16;

/// Input bytes, as the raw contents would carry them.
fn input_bytes(inputs: &[Tensor]) -> usize {
    inputs.iter().map(|t| t.data.raw_len()).sum()
}

impl Batcher {
    /// Starts one worker thread per runner. `quick`: whether the model's one-row run is short enough for
    /// requests of a few rows to run on the thread that parsed them.
    pub fn start(
        info: Arc<ModelInfo>,
        runners: Vec<Runner>,
        config: BatchConfig,
        metrics: Metrics,
        quick: bool,
    ) -> Self {
        let quick_bytes =
            quick.then(|| input_bytes(&crate::model::warmup_inputs(&info)).max(1).saturating_mul(QUICK_ROWS));
        let (tx, rx) = std::sync::mpsc::sync_channel(config.max_queue_size.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let runners: Arc<Vec<Mutex<Runner>>> = Arc::new(runners.into_iter().map(Mutex::new).collect());
        let inline = Arc::new(AtomicUsize::new(0));
        for i in 0..runners.len() {
            let (info, config, metrics, rx, runners, inline) =
                (info.clone(), config.clone(), metrics.clone(), rx.clone(), runners.clone(), inline.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("model-worker-{i}"))
                .spawn(move || worker(&runners[i], &info, &config, &metrics, &inline, &rx));
            if let Err(e) = spawned {
                tracing::error!(%e, "cannot start a model worker");
            }
        }
        Self { tx, metrics, info, runners, inline, config, quick_bytes }
    }

    /// Whether a request of `rows` rows may be joined with others (its inputs are then copied once more).
    pub fn may_join(&self, rows: usize) -> bool {
        self.config.enabled && self.info.batchable && rows < self.config.max_batch_size
    }

    /// Runs a request on the calling thread when a session is free, skipping two thread hand-offs: when
    /// it is quick (a few rows of a model that runs in microseconds), or when nothing else is queued or in
    /// flight (the async thread is then handed over to others while it runs). Gives the request back
    /// otherwise: a session that is busy may be running a long batch, which an async thread must not wait
    /// for.
    pub fn try_inline(&self, checked: Checked, deadline: Instant) -> Result<Reply, Checked> {
        let quick = self.quick_bytes.is_some_and(|most| input_bytes(&checked.inputs) <= most);
        if !quick && (self.metrics.queue_depth.get() != 0 || self.metrics.inflight.get() > 1) {
            return Err(checked);
        }
        let Some(mut runner) = self.runners.iter().find_map(|r| r.try_lock().ok()) else {
            return Err(checked);
        };
        let started = Instant::now();
        let Checked { inputs, outputs, rows, held } = checked;
        self.inline.fetch_add(1, Ordering::Relaxed);
        let run = || guarded(|| runner.run(&self.info, inputs, Some(deadline)));
        let result =
            if quick { run() } else { tokio::task::block_in_place(run) }.map(|outs| select(outs, &outputs));
        drop(held);
        self.inline.fetch_sub(1, Ordering::Relaxed);
        self.metrics.compute_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.queue_duration.observe(0.0);
        self.metrics.batch_size.observe(rows.max(1) as f64);
        Ok(result)
    }

    /// Queues a checked request; the receiver yields its outputs (every served output, in model order).
    pub fn submit(
        &self,
        checked: Checked,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Reply>, InferError> {
        let (reply, rx) = oneshot::channel();
        // Counted before it is visible to the workers, who uncount it when they take it.
        self.metrics.queue_depth.inc();
        match self.tx.try_send(Job { checked, reply, enqueued: Instant::now(), deadline }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.metrics.queue_depth.dec();
                Err(match e {
                    TrySendError::Full(_) => {
                        InferError::unavailable("the request queue is full; retry later")
                            .counted_as("queue_full")
                    }
                    TrySendError::Disconnected(_) => {
                        InferError::unavailable("the model workers have stopped")
                    }
                })
            }
        }
    }
}

/// Whether two requests can share a run: the same shapes past the batch dimension.
fn compatible(a: &Checked, b: &Checked) -> bool {
    a.inputs.iter().zip(&b.inputs).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

fn worker(
    runner: &Mutex<Runner>,
    info: &ModelInfo,
    config: &BatchConfig,
    metrics: &Metrics,
    inline: &AtomicUsize,
    rx: &Mutex<Receiver<Job>>,
) {
    let batching = config.enabled && info.batchable && config.max_batch_size > 1;
    let mut carried: Option<Job> = None;
    loop {
        let batch = {
            let Ok(rx) = rx.lock() else { return };
            // A carried job was uncounted when `collect` took it off the queue.
            let first = match carried.take() {
                Some(job) => job,
                None => match rx.recv() {
                    Ok(job) => {
                        metrics.queue_depth.dec();
                        job
                    }
                    Err(_) => return,
                },
            };
            let mut batch = vec![first];
            if batching {
                carried = collect(&rx, &mut batch, config, metrics, inline);
            }
            batch
        };
        let Ok(mut runner) = runner.lock() else { return };
        run_batch(&mut runner, info, batch, metrics);
    }
}

/// Adds compatible jobs to `batch` until it is full or the first job's delay is spent; once spent, only
/// jobs already waiting are taken. Returns a job that did not fit, for the next batch.
///
/// The delay is only spent while other requests are in flight (received, not yet queued or answered):
/// a lone request runs at once instead of waiting for company that is not coming, so batching costs
/// nothing at low load and joins requests when they overlap.
fn collect(
    rx: &Receiver<Job>,
    batch: &mut Vec<Job>,
    config: &BatchConfig,
    metrics: &Metrics,
    inline: &AtomicUsize,
) -> Option<Job> {
    let deadline = batch[0].enqueued + config.max_queue_delay;
    let mut rows: usize = batch[0].checked.rows;
    while rows < config.max_batch_size {
        let now = Instant::now();
        let joinable = usize::try_from(metrics.inflight.get())
            .unwrap_or(0)
            .saturating_sub(inline.load(Ordering::Relaxed));
        let others_in_flight = joinable > batch.len();
        let next = if now < deadline && others_in_flight {
            match rx.recv_timeout(deadline - now) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        };
        metrics.queue_depth.dec();
        if !compatible(&batch[0].checked, &next.checked) || rows + next.checked.rows > config.max_batch_size {
            return Some(next);
        }
        rows += next.checked.rows;
        batch.push(next);
    }
    None
}

fn run_batch(runner: &mut Runner, info: &ModelInfo, batch: Vec<Job>, metrics: &Metrics) {
    // A request whose caller stopped waiting (timed out, disconnected) is not worth running.
    let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
    if batch.is_empty() {
        return;
    }
    let deadline = batch.iter().map(|j| j.deadline).max();
    let started = Instant::now();
    for job in &batch {
        metrics.queue_duration.observe(started.duration_since(job.enqueued).as_secs_f64());
    }
    let rows: usize = batch.iter().map(|j| j.checked.rows).sum();
    metrics.batch_size.observe(rows.max(1) as f64);
    if batch.len() == 1 {
        let mut batch = batch;
        let Some(job) = batch.pop() else { return };
        let Job { checked, reply, .. } = job;
        let result =
            guarded(|| runner.run(info, checked.inputs, deadline)).map(|outs| select(outs, &checked.outputs));
        metrics.compute_duration.observe(started.elapsed().as_secs_f64());
        let _ = reply.send(result);
        return;
    }
    let result = guarded(|| join(&batch, rows).and_then(|inputs| runner.run(info, inputs, deadline)));
    metrics.compute_duration.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outputs) => {
            let mut offset = 0;
            for job in batch {
                let n = job.checked.rows;
                let part = split(&outputs, offset, n, rows).map(|outs| select(outs, &job.checked.outputs));
                offset += n;
                let _ = job.reply.send(part);
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Joins the jobs' inputs along the first dimension.
fn join(batch: &[Job], rows: usize) -> Result<Vec<Tensor>, InferError> {
    let first = &batch[0].checked.inputs;
    first
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let total: usize = batch.iter().map(|j| j.checked.inputs[i].data.len()).sum();
            let mut data = Data::with_capacity(t.datatype(), total);
            for job in batch {
                data.extend_from(&job.checked.inputs[i].data)?;
            }
            let mut shape = t.shape.clone();
            shape[0] = rows as i64;
            Ok(Tensor { name: t.name.clone(), shape, data })
        })
        .collect()
}

/// Rows `offset..offset+n` of every output of a joined run.
fn split(outputs: &[Tensor], offset: usize, n: usize, rows: usize) -> Result<Vec<Tensor>, InferError> {
    outputs
        .iter()
        .map(|t| {
            if t.shape.first() != Some(&(rows as i64)) {
                return Err(InferError::internal(format!(
                    "output {:?} has shape {:?}, not {rows} rows: the model cannot be batched",
                    t.name, t.shape
                )));
            }
            let per_row = t.data.len() / rows.max(1);
            let mut shape = t.shape.clone();
            shape[0] = n as i64;
            Ok(Tensor {
                name: t.name.clone(),
                shape,
                data: t.data.slice(offset * per_row, (offset + n) * per_row),
            })
        })
        .collect()
}

fn select(outputs: Vec<Tensor>, wanted: &[usize]) -> Vec<Tensor> {
    let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    wanted.iter().filter_map(|&i| slots.get_mut(i).and_then(Option::take)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: Vec<i64>, data: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape, data: Data::F32(data) }
    }

    fn job(rows: usize, data: Vec<f32>) -> Job {
        let (reply, _) = oneshot::channel();
        Job {
            checked: Checked {
                inputs: vec![t("x", vec![rows as i64, 2], data)],
                outputs: vec![0],
                rows,
                held: None,
            },
            reply,
            enqueued: Instant::now(),
            deadline: Instant::now(),
        }
    }

    #[test]
    fn join_then_split_gives_each_job_its_rows() {
        let batch = vec![job(1, vec![1.0, 2.0]), job(2, vec![3.0, 4.0, 5.0, 6.0])];
        let joined = join(&batch, 3).unwrap();
        assert_eq!(joined[0].shape, vec![3, 2]);
        assert_eq!(joined[0].data, Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let second = split(&joined, 1, 2, 3).unwrap();
        assert_eq!(second[0], t("x", vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]));
    }

    #[test]
    fn split_refuses_outputs_that_are_not_row_major_in_the_batch() {
        let out = vec![t("y", vec![1, 6], vec![0.0; 6])];
        assert!(split(&out, 0, 1, 3).is_err());
    }

    #[test]
    fn compatibility_needs_equal_trailing_dims() {
        let a = job(1, vec![1.0, 2.0]);
        let mut b = job(1, vec![1.0, 2.0]);
        assert!(compatible(&a.checked, &b.checked));
        b.checked.inputs[0].shape = vec![1, 3];
        assert!(!compatible(&a.checked, &b.checked));
    }

    #[test]
    fn select_keeps_the_requested_order() {
        let outs = vec![t("a", vec![1], vec![1.0]), t("b", vec![1], vec![2.0])];
        let got = select(outs, &[1, 0]);
        assert_eq!(got.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    }
}
