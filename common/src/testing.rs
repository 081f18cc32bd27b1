//! Test fixtures shared by the crates' tests (feature `testing`, enabled only as a dev-dependency): the
//! project's Python environment, ONNX Runtime's library from its onnxruntime wheel, and data made once by
//! a Python script and cached outside the clone.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root: the workspace (the directory with `Cargo.lock`) around the crate under test.
///
/// Found from `CARGO_MANIFEST_DIR` as cargo sets it when it runs a test, not as it was when this crate was
/// compiled: checkouts that share one target directory can reuse each other's test binaries (cargo hashes
/// workspace paths relative to the workspace), and such a binary must still read this checkout's files.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = start.ancestors().find(|d| d.join("Cargo.lock").is_file()).unwrap_or(&start);
    root.canonicalize().expect("repo root")
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("MIZZEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mizzen"))
}

/// The project's Python virtual environment (created once by hack/python-env.sh, cached outside the clone).
pub fn venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| venv_for(None))
}

/// The virtual environment of a requirements file under `hack/` (`None`: hack/python-requirements.txt),
/// created once by hack/python-env.sh and cached outside the clone.
pub fn venv_for(requirements: Option<&str>) -> PathBuf {
    let mut env = Command::new(repo_root().join("hack/python-env.sh"));
    if let Some(file) = requirements {
        env.arg(repo_root().join("hack").join(file));
    }
    let out = env.output().expect("running hack/python-env.sh");
    assert!(out.status.success(), "hack/python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// libonnxruntime.so from the onnxruntime wheel.
pub fn ort_dylib() -> &'static PathBuf {
    static DYLIB: OnceLock<PathBuf> = OnceLock::new();
    DYLIB.get_or_init(|| {
        let capi = std::fs::read_dir(venv().join("lib"))
            .expect("venv lib")
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/onnxruntime/capi"))
            .find(|p| p.exists())
            .expect("onnxruntime in the venv");
        std::fs::read_dir(&capi)
            .expect("capi")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so.")))
            .expect("libonnxruntime.so.* in the onnxruntime wheel")
    })
}

/// The directory `python SCRIPT DIR` fills, made once per content of the script (repo-relative path) and
/// cached as `$MIZZEN_CACHE/PREFIX-HASH`. `done` names a file the script writes last. Tests of one process
/// that ask at once wait for each other (they would share the temporary directory, named by the process);
/// other processes make their own and the first rename wins.
pub fn generated(script: &str, prefix: &str, done: &str) -> PathBuf {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let script = repo_root().join(script);
    let text = std::fs::read(&script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let hash = text.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let cache = cache_dir();
    let dir = cache.join(format!("{prefix}-{hash:016x}"));
    if !dir.join(done).exists() {
        let tmp = cache.join(format!("{prefix}-{hash:016x}.tmp-{}", std::process::id()));
        let status = Command::new(python()).arg(&script).arg(&tmp).status().expect("running a Python script");
        assert!(status.success(), "{} failed", script.display());
        let _ = std::fs::rename(&tmp, &dir);
    }
    dir
}

/// Reads an HTTP request's head (up to the blank line) from `conn`, for the small HTTP servers tests
/// run; `None` when the connection ends first.
pub async fn read_request_head(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// Waits up to 20 s until something accepts connections on loopback `port` (a server a test started);
/// panics naming `what` if nothing does.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
