//! Adaptive concurrency at the SDK boundary: a scripted EBS direct server on loopback that
//! answers ThrottlingException whenever more than `MAX_IN_FLIGHT` block requests are in flight
//! (as EBS does past its per-snapshot rate). A download with a higher `--concurrency` must
//! still succeed, byte for byte, and the number of requests in flight the server sees must
//! fall to what it tolerates.
//!
//! The server answers nothing until the first `CONCURRENCY` block requests have all arrived,
//! so the opening burst is the client's full concurrency whatever the machine's speed; after
//! that, accepted requests take `LATENCY` (so that requests overlap, as against a real
//! endpoint) and throttled ones are answered at once. Nothing is asserted about time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autosnap_aws::ebs::{block_checksum, Ebs, BLOCK_SIZE};
use autosnap_aws::CallSite;
use autosnap_engine::{download_snapshot, NoProgress};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SNAPSHOT: &str = "snap-0123456789abcdef0";
const BLOCKS: u64 = 64;
const CONCURRENCY: usize = 16;
const MAX_IN_FLIGHT: usize = 4;
/// How long the server takes to answer an accepted block request (so that requests overlap,
/// as they do against a real endpoint).
const LATENCY: Duration = Duration::from_millis(40);

fn block(index: u64) -> Vec<u8> {
    (0..BLOCK_SIZE)
        .map(|i| (i as u64 * 31 + index * 7 + 1) as u8)
        .collect()
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Block requests in flight at each arrival (the arriving one included), in arrival order.
    arrivals: Mutex<Vec<usize>>,
    throttled: AtomicUsize,
    served: AtomicUsize,
}

struct ScriptedEbs {
    in_flight: AtomicUsize,
    /// Released when the first `CONCURRENCY` block requests are all in flight.
    first_wave: tokio::sync::Barrier,
    seen: Seen,
}

struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl ScriptedEbs {
    async fn handle(&self, path: &str) -> Response {
        let (path, _query) = path.split_once('?').unwrap_or((path, ""));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match parts.as_slice() {
            ["snapshots", id, "blocks"] if *id == SNAPSHOT => {
                let blocks: Vec<String> = (0..BLOCKS)
                    .map(|i| format!(r#"{{"BlockIndex":{i},"BlockToken":"token-{i}"}}"#))
                    .collect();
                let body = format!(
                    r#"{{"Blocks":[{}],"BlockSize":{BLOCK_SIZE},"VolumeSize":1}}"#,
                    blocks.join(",")
                );
                json(body)
            }
            ["snapshots", id, "blocks", index] if *id == SNAPSHOT => {
                let index: u64 = index.parse().expect("block index");
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                let arrival = {
                    let mut arrivals = self.seen.arrivals.lock().unwrap();
                    arrivals.push(now);
                    arrivals.len()
                };
                if arrival <= CONCURRENCY {
                    self.first_wave.wait().await;
                }
                let response = if now > MAX_IN_FLIGHT {
                    self.seen.throttled.fetch_add(1, Ordering::SeqCst);
                    Response {
                        status: "400 Bad Request",
                        headers: vec![("x-amzn-ErrorType", "ThrottlingException".into())],
                        body: br#"{"message":"Rate exceeded"}"#.to_vec(),
                    }
                } else {
                    tokio::time::sleep(LATENCY).await;
                    self.seen.served.fetch_add(1, Ordering::SeqCst);
                    let data = block(index);
                    let (checksum, _) = block_checksum(&data);
                    Response {
                        status: "200 OK",
                        headers: vec![
                            ("x-amz-Checksum", checksum),
                            ("x-amz-Checksum-Algorithm", "SHA256".into()),
                            ("x-amz-Data-Length", BLOCK_SIZE.to_string()),
                            ("content-type", "application/octet-stream".into()),
                        ],
                        body: data,
                    }
                };
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                response
            }
            _ => Response {
                status: "404 Not Found",
                headers: vec![("x-amzn-ErrorType", "ResourceNotFoundException".into())],
                body: format!(r#"{{"message":"no route {path}"}}"#).into_bytes(),
            },
        }
    }
}

fn json(body: String) -> Response {
    Response {
        status: "200 OK",
        headers: vec![("content-type", "application/json".into())],
        body: body.into_bytes(),
    }
}

/// One keep-alive HTTP/1.1 connection: requests one after the other.
async fn serve_connection(server: Arc<ScriptedEbs>, stream: TcpStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            read.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        read.read_exact(&mut body).await?;
        let response = server.handle(&path).await;
        let mut head = format!(
            "HTTP/1.1 {}\r\ncontent-length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        write.write_all(head.as_bytes()).await?;
        write.write_all(&response.body).await?;
        write.flush().await?;
    }
}

async fn start(server: Arc<ScriptedEbs>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_connection(Arc::clone(&server), stream));
        }
    });
    addr
}

fn ebs_at(addr: SocketAddr) -> Ebs {
    let conf = aws_sdk_ebs::Config::builder()
        .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
        .region(aws_sdk_ebs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ebs::config::Credentials::new(
            "AKID", "SECRET", None, None, "test",
        ))
        .endpoint_url(format!("http://{addr}"))
        .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
        .build();
    let site = CallSite {
        service: "EBS",
        region: "us-east-1".into(),
        account: None,
        endpoint: Some(format!("http://{addr}")),
    };
    Ebs::from_client(aws_sdk_ebs::Client::from_conf(conf), site)
}

/// A scratch file path, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_server_lowers_the_concurrency_and_the_download_completes() {
    let server = Arc::new(ScriptedEbs {
        in_flight: AtomicUsize::new(0),
        first_wave: tokio::sync::Barrier::new(CONCURRENCY),
        seen: Seen::default(),
    });
    let addr = start(Arc::clone(&server)).await;
    // The transfer's own limit, as the CLI sets it from --concurrency.
    let ebs = ebs_at(addr).with_concurrency(CONCURRENCY);
    let out = Scratch(std::env::temp_dir().join(format!(
        "autosnap-adaptive-{}-{}.img",
        std::process::id(),
        addr.port()
    )));

    let report = tokio::time::timeout(
        Duration::from_secs(300),
        download_snapshot(
            &ebs,
            SNAPSHOT,
            &out.0,
            CONCURRENCY,
            autosnap_repo::Overwrite::Refuse,
            &NoProgress,
        ),
    )
    .await
    .expect("the download does not hang")
    .expect("the download succeeds despite throttling");

    assert_eq!(report.blocks_read, BLOCKS);
    let image = std::fs::read(&out.0).unwrap();
    for index in 0..BLOCKS {
        let at = index as usize * BLOCK_SIZE;
        assert!(
            image[at..at + BLOCK_SIZE] == block(index)[..],
            "block {index} differs"
        );
    }
    assert!(
        image[BLOCKS as usize * BLOCK_SIZE..]
            .iter()
            .all(|&b| b == 0),
        "the rest of the volume reads as zeros"
    );

    let arrivals = server.seen.arrivals.lock().unwrap().clone();
    let throttled = server.seen.throttled.load(Ordering::SeqCst);
    assert_eq!(server.seen.served.load(Ordering::SeqCst), BLOCKS as usize);
    assert_eq!(arrivals.len(), BLOCKS as usize + throttled);
    let early = arrivals[..CONCURRENCY].iter().max().copied().unwrap();
    assert_eq!(early, CONCURRENCY, "the opening burst: {arrivals:?}");
    let late = arrivals[arrivals.len() / 2..]
        .iter()
        .max()
        .copied()
        .unwrap();
    assert!(
        throttled > 0 && early > MAX_IN_FLIGHT,
        "the first burst went over the server's limit: {early} in flight, {throttled} throttled"
    );
    assert!(
        late <= MAX_IN_FLIGHT + 1,
        "the second half stays near the server's limit (at most one over, when probing): \
         {late} in flight; arrivals {arrivals:?}"
    );
    assert!(late < early, "{late} < {early}");
}
