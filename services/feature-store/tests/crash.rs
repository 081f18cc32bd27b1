//! The binary: killed with SIGKILL at random moments while clients push, 100 times, every acknowledged row
//! is there after each restart (no manual step); slow and surplus connections are cut off; SIGTERM stops it.

use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FEATURE_SET: &str = r#"{"metadata": {"name": "counters"}, "spec": {
  "entity": {"name": "counter", "joinKey": "id", "type": "int64"},
  "features": [{"name": "n", "type": "int64"}, {"name": "tag", "type": "string"}],
  "sources": [{"name": "ticks", "uri": "s3://data/ticks.csv", "timestampColumn": "ts"}]}}"#;

fn start(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mizzen-features"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--feature-set", FEATURE_SET])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mizzen-features starts")
}

async fn ready(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("http://127.0.0.1:{port}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "mizzen-features did not come up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn post_json(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let response = client.post(format!("http://127.0.0.1:{port}{path}")).json(body).send().await.unwrap();
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_acknowledged_push_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    // Per counter (id 0..8), the highest n acknowledged: n is also the event time, so it is what an online
    // lookup must show at least; every acknowledged n must be in the offline history.
    let mut acked: Vec<Vec<i64>> = vec![Vec::new(); 8];
    let mut next = 1i64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..100 {
        let mut child = start(dir.path(), port);
        ready(&client, port).await;
        // Four clients push one row each per request until the kill, which comes 0-40 ms after the first
        // acknowledgement (so every round has one, however slow the machine).
        let kill_after = Duration::from_millis(random(40));
        let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pushes: Vec<_> = (0..4)
            .map(|c| {
                let (client, acks) = (client.clone(), acks.clone());
                let first = next + c * 1000;
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    for n in first..first + 1000 {
                        let id = n % 8;
                        let df = json!({"id": [id], "ts": [n], "n": [n], "tag": [format!("t{n}")]});
                        let body = json!({"push_source_name": "ticks", "df": df, "to": "online_and_offline"});
                        match client.post(format!("http://127.0.0.1:{port}/push")).json(&body).send().await {
                            Ok(r) if r.status() == 200 => {
                                done.push((id, n));
                                acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            _ => break,
                        }
                    }
                    done
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no push was acknowledged");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(kill_after).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for p in pushes {
            for (id, n) in p.await.unwrap() {
                acked[id as usize].push(n);
            }
        }
        next += 4000;
    }
    // One last restart: every acknowledged row is there, online and offline.
    let mut child = start(dir.path(), port);
    ready(&client, port).await;
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total >= 100, "every round acknowledged a push: {total}");
    let ids: Vec<i64> = (0..8).collect();
    let lookup = json!({"features": ["counters:n"], "entities": {"id": ids}});
    let body = post_json(&client, port, "/get-online-features", &lookup).await;
    for (id, ns) in acked.iter().enumerate() {
        let Some(max) = ns.iter().max() else { continue };
        let got = body["results"][1]["values"][id].as_i64().unwrap_or(-1);
        // A push that was written but not acknowledged before the kill may be there too: never less.
        assert!(got >= *max, "counter {id}: online n {got}, but {max} was acknowledged");
    }
    // Offline: each acknowledged row, as of its own time.
    let (mut keys, mut times) = (Vec::new(), Vec::new());
    for (id, ns) in acked.iter().enumerate() {
        for n in ns {
            keys.push(id as i64);
            times.push(*n);
        }
    }
    let request = json!({"features": ["counters:n"], "entities": {"id": keys, "event_timestamp": times}});
    let body = post_json(&client, port, "/get-historical-features", &request).await;
    assert_eq!(body["values"][2], json!(times), "every acknowledged row in the offline history");
    child.kill().unwrap();
    child.wait().unwrap();
    println!("{total} acknowledged pushes across 100 kill -9s, all there");
}

/// The binary as a hostile client finds it: a request whose headers never end is cut off after
/// `--header-timeout-seconds`, connections past `--max-connections` are closed, and SIGTERM stops it
/// promptly with its data intact.
#[tokio::test]
async fn slow_clients_are_cut_off_and_sigterm_stops_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mizzen-features"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--feature-set", FEATURE_SET])
        .args(["--header-timeout-seconds", "1", "--max-connections", "4"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    ready(&client, port).await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"POST /push HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "a stalled request held its connection for {waited:?}");
    // Connections held open (each answered once): past the limit of four, a new one is closed unanswered.
    // (The client's pooled connection from `ready` may still hold a slot, so three or four are held.)
    drop(client);
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..6 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut buf = vec![0u8; 512];
        let n =
            tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await.ok().and_then(Result::ok);
        if n.unwrap_or(0) == 0 {
            refused = true;
            break;
        }
        held.push(conn);
    }
    assert!(refused && held.len() <= 4, "{} connections held, one refused: {refused}", held.len());
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(25), "SIGTERM did not stop it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
