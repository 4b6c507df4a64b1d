//! autosnap as an AWS Lambda function, against the test bed.
//!
//! In-process: `autosnap lambda-invoke --event FILE` calls the function's handler once, as the
//! runtime loop does, and prints its response or its error (`errorType`, `errorMessage`).
//! Through the Lambda Runtime API: the binary copied as `bootstrap` polls a scripted runtime
//! endpoint (a small HTTP server in this file speaking the documented 2018-06-01 API) and posts
//! each invocation's response or error there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::{TestBed, ACCOUNT, REGION};
use serde_json::{json, Value};

const POLICY: &str = r#"
[[policy]]
name = "daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
"#;

/// How long a test waits for the bootstrap to post what it was sent before failing.
const PATIENCE: Duration = Duration::from_secs(120);

/// The function's config from `AUTOSNAP_CONFIG` (the TOML text).
fn inline(config: &str) -> Vec<(&'static str, String)> {
    vec![("AUTOSNAP_CONFIG", config.to_string())]
}

/// `lambda-invoke` with `event` and the function's environment `env`: exit code and output.
fn invoke(
    bed: &TestBed,
    env: &[(&'static str, String)],
    event: &Value,
    deadline_ms: Option<u64>,
) -> (Option<i32>, Value, String) {
    let file = bed.home.path().join("event.json");
    std::fs::write(&file, event.to_string()).unwrap();
    let mut cmd = bed.cmd();
    cmd.arg("lambda-invoke").arg("--event").arg(&file);
    if let Some(d) = deadline_ms {
        cmd.args(["--deadline-ms", &d.to_string()]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "lambda-invoke printed no JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code(), doc, stderr)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Snapshots of policy `daily` in the base account.
fn backups(bed: &TestBed) -> Vec<Value> {
    bed.json(&["snapshot", "list", "--tag", "autosnap:policy=daily"])
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_run_event_runs_the_policies_and_returns_the_report() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);

    let (code, r, stderr) = invoke(&bed, &inline(POLICY), &json!({"command": "run"}), None);
    assert_eq!(code, Some(0), "{r}\n{stderr}");
    assert_eq!(r["command"], "run");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["complete"], true);
    assert_eq!(r["left"], json!([]));
    let created = r["report"]["report"]["created"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{r}");
    assert_eq!(created[0]["target_id"], vol.as_str());
    let made = backups(&bed);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["snapshot_id"], created[0]["snapshot_ids"][0]);
    // The run's own log lines (JSON) come through on the function's standard error.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("policy daily: created")),
        "{stderr}"
    );

    // The report is the command's own JSON: the same run again finds the backup and makes none.
    let (_, again, _) = invoke(&bed, &inline(POLICY), &json!({"command": "run"}), None);
    assert_eq!(again["report"]["summary"]["creates"], 0, "{again}");
}

#[test]
fn a_status_event_returns_status_and_a_plan_event_the_plan() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let cfg = format!("{POLICY}\n[[policy]]\nname = \"weekly\"\nresource = \"volume\"\nselect = [{{ tags = {{ Backup = \"weekly\" }} }}]\nschedule = \"7d\"\nretain = {{ last = 2 }}\n");

    let (code, s, stderr) = invoke(
        &bed,
        &inline(&cfg),
        &json!({"command": "status", "policies": ["daily"]}),
        None,
    );
    assert_eq!(code, Some(0), "{s}\n{stderr}");
    assert_eq!(s["command"], "status");
    assert_eq!(s["complete"], true);
    let policies = s["report"]["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "only the policy named: {s}");
    assert_eq!(policies[0]["policy"], "daily");
    assert_eq!(policies[0]["targets"][0]["target_id"], vol.as_str());
    assert_eq!(policies[0]["targets"][0]["backup_count"], 0);

    let (code, p, _) = invoke(&bed, &inline(&cfg), &json!({"command": "plan"}), None);
    assert_eq!(code, Some(0), "{p}");
    assert_eq!(p["command"], "plan");
    let daily = &p["report"]["policies"][0];
    assert_eq!(daily["policy"], "daily", "{p}");
    assert_eq!(daily["targets"][0]["target_id"], vol.as_str());
    assert_eq!(daily["targets"][0]["due"], true);
    assert!(backups(&bed).is_empty(), "plan and status change nothing");
}

#[test]
fn a_bad_event_is_refused_with_what_is_allowed_and_runs_nothing() {
    let bed = TestBed::start();
    bed.volume(1, &[("Backup", "daily")]);
    for (event, says) in [
        (
            json!({"command": "run", "policy": ["daily"]}),
            "unknown field `policy` in the event: allowed are command, policies, accounts, dry_run",
        ),
        (
            json!({"command": "backup"}),
            "unknown command `backup` in the event's `command`: allowed are run, prune, status, plan",
        ),
        (
            json!({"command": "status", "dry_run": true}),
            "`dry_run` applies to run and prune only",
        ),
    ] {
        let (code, r, _) = invoke(&bed, &inline(POLICY), &event, None);
        assert_eq!(code, Some(1), "{r}");
        assert_eq!(r["errorType"], "autosnap.BadEvent", "{r}");
        let message = r["errorMessage"].as_str().unwrap();
        assert!(message.contains(says), "{event}: {message}");
    }
    assert!(backups(&bed).is_empty());
}

#[test]
fn the_config_comes_from_s3_or_ssm_and_exactly_one_source_is_required() {
    let bed = TestBed::start();
    bed.volume(1, &[("Backup", "daily")]);
    let plan = json!({"command": "plan"});

    bed.bucket("config-bucket");
    let s3 = bed.s3();
    bed.block(async {
        s3.put_object()
            .bucket("config-bucket")
            .key("autosnap/config.toml")
            .body(POLICY.as_bytes().to_vec().into())
            .send()
            .await
            .expect("put config")
    });
    let from_s3 = [(
        "AUTOSNAP_CONFIG_S3",
        "s3://config-bucket/autosnap/config.toml".to_string(),
    )];
    let (code, r, stderr) = invoke(&bed, &from_s3, &plan, None);
    assert_eq!(code, Some(0), "{r}\n{stderr}");
    assert_eq!(r["report"]["policies"][0]["policy"], "daily", "{r}");

    let ssm = ssm(&bed);
    bed.block(async {
        ssm.put_parameter()
            .name("/autosnap/config")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .value(POLICY.replace("daily", "nightly"))
            .send()
            .await
            .expect("put parameter")
    });
    let from_ssm = [("AUTOSNAP_CONFIG_SSM", "/autosnap/config".to_string())];
    let (code, r, stderr) = invoke(&bed, &from_ssm, &plan, None);
    assert_eq!(code, Some(0), "{r}\n{stderr}");
    assert_eq!(
        r["report"]["policies"][0]["policy"], "nightly",
        "the SecureString, decrypted: {r}"
    );

    // A source that cannot be read, none, or two: an error naming what to fix.
    let missing = [("AUTOSNAP_CONFIG_SSM", "/autosnap/none".to_string())];
    for (env, says) in [
        (&missing[..], "SSM parameter /autosnap/none does not exist"),
        (
            &[][..],
            "no config: set exactly one of AUTOSNAP_CONFIG_S3 (s3://bucket/key), \
             AUTOSNAP_CONFIG_SSM (a parameter name) or AUTOSNAP_CONFIG (the TOML text)",
        ),
        (
            &[from_s3[0].clone(), from_ssm[0].clone()][..],
            "AUTOSNAP_CONFIG_S3 and AUTOSNAP_CONFIG_SSM are set together",
        ),
    ] {
        let (code, r, _) = invoke(&bed, env, &plan, None);
        assert_eq!(code, Some(1), "{r}");
        assert_eq!(r["errorType"], "autosnap.Failure", "{r}");
        let message = r["errorMessage"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
}

fn ssm(bed: &TestBed) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .endpoint_url(bed.endpoint())
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// IAM CreateRole `autosnap` in `account`, trusting the base account.
fn create_role(bed: &TestBed, account: &str) {
    bed.create_role_trusting(account, "autosnap", ACCOUNT);
}

#[test]
fn an_account_whose_role_is_missing_is_a_partial_failure_naming_it() {
    let bed = TestBed::start();
    let (ok, missing) = ("111111111111", "333333333333");
    create_role(&bed, ok);
    let mut cfg = POLICY.to_string();
    for id in [ok, missing] {
        cfg.push_str(&format!(
            "\n[[account]]\nid = \"{id}\"\nrole_arn = \"arn:aws:iam::{id}:role/autosnap\"\n"
        ));
    }

    let (code, r, stderr) = invoke(&bed, &inline(&cfg), &json!({"command": "run"}), None);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["errorType"], "autosnap.PartialFailure", "{r}");
    let message = r["errorMessage"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "account {missing}: cannot assume arn:aws:iam::{missing}:role/autosnap"
        )),
        "{message}"
    );
    assert!(!message.contains(&format!("account {ok}")), "{message}");
    // The whole report is in the function's log.
    let logged = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["report"].is_string())
        .unwrap_or_else(|| panic!("no report logged: {stderr}"));
    let report: Value = serde_json::from_str(logged["fields"]["report"].as_str().unwrap()).unwrap();
    assert_eq!(report["failed_accounts"], 1, "{report}");
    assert_eq!(report["accounts"][0]["account_id"], ok);
    assert_eq!(report["accounts"][0]["ok"], true);
}

#[test]
fn a_deadline_inside_the_margin_starts_nothing_and_says_what_is_left() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    // 30 s left, 60 s margin (the default): the run gets a time limit of 0.
    let (code, r, stderr) = invoke(
        &bed,
        &inline(POLICY),
        &json!({"command": "run"}),
        Some(now_ms() + 30_000),
    );
    assert_eq!(code, Some(0), "a deadline stop is a success: {r}\n{stderr}");
    assert_eq!(r["complete"], false);
    assert_eq!(r["exit_code"], 0);
    let left = r["left"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{r}");
    assert_eq!(left[0]["action"], "create");
    assert_eq!(left[0]["target_id"], vol.as_str());
    assert!(backups(&bed).is_empty());

    // A smaller margin leaves the same deadline room to work.
    let margin = [
        inline(POLICY).remove(0),
        ("AUTOSNAP_DEADLINE_MARGIN", "1s".to_string()),
    ];
    let (code, r, _) = invoke(
        &bed,
        &margin,
        &json!({"command": "run"}),
        Some(now_ms() + 600_000),
    );
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(backups(&bed).len(), 1);
}

// ---- through the Lambda Runtime API ---------------------------------------------------------

/// A request the scripted runtime endpoint received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// The scripted runtime endpoint: hands out `events` on `/next`, records every request.
struct RuntimeApi {
    port: u16,
    events: mpsc::Sender<(String, u64, Value)>,
    posts: mpsc::Receiver<Received>,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl RuntimeApi {
    fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (events, queue) = mpsc::channel::<(String, u64, Value)>();
        let queue = Arc::new(Mutex::new(queue));
        let (post_tx, posts) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (queue, post_tx, seen) = (queue.clone(), post_tx.clone(), seen2.clone());
                std::thread::spawn(move || serve(conn, &queue, &post_tx, &seen));
            }
        });
        RuntimeApi {
            port,
            events,
            posts,
            seen,
        }
    }

    fn invoke(&self, id: &str, deadline_ms: u64, event: Value) {
        self.events.send((id.into(), deadline_ms, event)).unwrap();
    }

    /// The next POST (a response or an error).
    fn next_post(&self, bootstrap: &mut Child) -> Received {
        match self.posts.recv_timeout(PATIENCE) {
            Ok(r) => r,
            Err(_) => {
                let _ = bootstrap.kill();
                panic!(
                    "the bootstrap posted nothing in {PATIENCE:?}; it asked: {:?}",
                    self.seen.lock().unwrap()
                );
            }
        }
    }
}

/// One connection (the runtime client keeps it alive across requests).
fn serve(
    conn: TcpStream,
    queue: &Mutex<mpsc::Receiver<(String, u64, Value)>>,
    posts: &mpsc::Sender<Received>,
    seen: &Mutex<Vec<Received>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let body = read_body(&mut reader, &headers);
        let req = Received {
            method,
            path,
            headers,
            body,
        };
        seen.lock().unwrap().push(req.clone());
        if req.method == "GET" && req.path == "/2018-06-01/runtime/invocation/next" {
            // Blocks until the test hands out the next event (or ends).
            let next = queue.lock().unwrap().recv();
            let Ok((id, deadline, event)) = next else {
                return;
            };
            let body = event.to_string();
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: {id}\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:{REGION}:{ACCOUNT}:function:autosnap\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else if req.method == "POST" {
            let _ = posts.send(req);
            let body = r#"{"status":"OK"}"#;
            let _ = write!(
                out,
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            let _ = write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

fn read_body(reader: &mut BufReader<TcpStream>, headers: &HashMap<String, String>) -> String {
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    String::from_utf8(body).unwrap()
}

/// The built binary copied into a temporary directory as `bootstrap`, started as Lambda would
/// start it: no arguments, the runtime's variables and the function's environment.
fn start_bootstrap(bed: &TestBed, api: &RuntimeApi, dir: &Path, env: &[(&str, String)]) -> Child {
    let bootstrap = dir.join("bootstrap");
    std::fs::copy(assert_cmd::cargo::cargo_bin("autosnap"), &bootstrap).unwrap();
    let mut cmd = std::process::Command::new(&bootstrap);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("AUTOSNAP_") {
            cmd.env_remove(k);
        }
    }
    std::fs::write(dir.join("aws-config"), "").unwrap();
    cmd.current_dir(dir)
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-config"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", bed.endpoint())
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port))
        .env("AWS_LAMBDA_FUNCTION_NAME", "autosnap")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start bootstrap")
}

#[test]
fn bootstrap_answers_invocations_through_the_runtime_api() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let api = RuntimeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let mut bootstrap = start_bootstrap(&bed, &api, dir.path(), &inline(POLICY));

    // 1. A deadline 30 s away, inside the 60 s margin: nothing starts, the create is left.
    api.invoke("req-1", now_ms() + 30_000, json!({"command": "run"}));
    let post = api.next_post(&mut bootstrap);
    assert_eq!(post.path, "/2018-06-01/runtime/invocation/req-1/response");
    let r: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(r["complete"], false, "{r}");
    assert_eq!(r["left"][0]["action"], "create", "{r}");
    assert_eq!(r["left"][0]["target_id"], vol.as_str());

    // 2. Room to work: the backup is made and the result is the run's report.
    api.invoke("req-2", now_ms() + 900_000, json!({"command": "run"}));
    let post = api.next_post(&mut bootstrap);
    assert_eq!(post.path, "/2018-06-01/runtime/invocation/req-2/response");
    let r: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(
        r["report"]["report"]["created"][0]["target_id"],
        vol.as_str()
    );

    // 3. A bad event: an error report, and the loop goes on.
    api.invoke("req-3", now_ms() + 900_000, json!({"command": "backup"}));
    let post = api.next_post(&mut bootstrap);
    assert_eq!(post.path, "/2018-06-01/runtime/invocation/req-3/error");
    // The official client marks the error with the documented header; the type is in the body.
    assert!(
        post.headers
            .contains_key("lambda-runtime-function-error-type"),
        "{post:?}"
    );
    let e: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(e["errorType"], "autosnap.BadEvent");
    assert!(e["errorMessage"]
        .as_str()
        .unwrap()
        .contains("allowed are run, prune, status, plan"));

    // 4. Still polling: a status event after the error is answered.
    api.invoke("req-4", now_ms() + 900_000, json!({"command": "status"}));
    let post = api.next_post(&mut bootstrap);
    assert_eq!(post.path, "/2018-06-01/runtime/invocation/req-4/response");
    let r: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(r["report"]["policies"][0]["targets"][0]["backup_count"], 1);

    let _ = bootstrap.kill();
    let _ = bootstrap.wait();
    let asked = api.seen.lock().unwrap();
    let nexts = asked
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/2018-06-01/runtime/invocation/next")
        .count();
    assert!(nexts >= 4, "one /next per invocation: {asked:?}");
    // The bootstrap's own log and the child's are JSON lines on its standard error.
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("policy daily: created")),
        "{log}"
    );
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
