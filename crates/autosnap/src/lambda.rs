//! autosnap as an AWS Lambda function. The same executable runs the Lambda runtime loop when
//! its file name is `bootstrap` (what the provided.al2023 runtime starts, with no arguments).
//!
//! Each invocation runs the command in a fresh child process of this executable
//! (`autosnap --config FILE -o json --log-format json COMMAND ...`): nothing is carried over
//! on a warm container, a panic becomes an error report instead of ending the runtime loop,
//! and the result holds the command's documented JSON as it printed it. The event, the
//! result and the environment are described in docs/lambda.md ("Events and results").
//!
//! `autosnap lambda-invoke --event FILE [--deadline-ms EPOCH_MS]` (hidden) calls the same
//! handler once without the Runtime API and prints what the function would return, so the
//! handler is tested through the real binary.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autosnap_aws::config_source::{self, ConfigSource};
use autosnap_aws::{AwsContext, AwsSettings};
use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

/// The executable's name in a Lambda deployment package.
const BOOTSTRAP: &str = "bootstrap";
/// How long before the function's deadline a run stops starting work.
const MARGIN_VAR: &str = "AUTOSNAP_DEADLINE_MARGIN";
const DEFAULT_MARGIN: Duration = Duration::from_secs(60);
/// What the runtime client needs from Lambda's environment (it panics without them).
const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];
/// The longest errorMessage: enough for many failures, short enough for a CloudWatch alarm.
const MAX_MESSAGE: usize = 4096;
/// The commands an event may name, and the fields it may have.
const COMMANDS: [&str; 4] = ["run", "prune", "status", "plan"];
const FIELDS: [&str; 4] = ["command", "policies", "accounts", "dry_run"];

/// Lambda mode or the hidden `lambda-invoke`; `None`: an ordinary command line.
pub fn entry(args: &[OsString]) -> Option<ExitCode> {
    let name = args.first().map(Path::new).and_then(Path::file_name);
    if name.is_some_and(|n| n == BOOTSTRAP) {
        return Some(runtime_loop());
    }
    if args.get(1).is_some_and(|a| a == "lambda-invoke") {
        return Some(invoke_once(&args[2..]));
    }
    None
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub command: String,
    pub policies: Vec<String>,
    pub accounts: Vec<String>,
    pub dry_run: bool,
}

impl Event {
    /// Checks every field; a wrong one is named with what is allowed.
    pub fn parse(event: &Value) -> Result<Event, String> {
        let Some(fields) = event.as_object() else {
            return Err(format!(
                "the event must be a JSON object with the fields {}; got {}",
                FIELDS.join(", "),
                kind_of(event)
            ));
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{unknown}` in the event: allowed are {}",
                FIELDS.join(", ")
            ));
        }
        let command = match fields.get("command") {
            Some(Value::String(c)) if COMMANDS.contains(&c.as_str()) => c.clone(),
            Some(Value::String(c)) => {
                return Err(format!(
                    "unknown command `{c}` in the event's `command`: allowed are {}",
                    COMMANDS.join(", ")
                ))
            }
            Some(other) => {
                return Err(format!(
                    "the event's `command` must be a string, one of {}; got {}",
                    COMMANDS.join(", "),
                    kind_of(other)
                ))
            }
            None => {
                return Err(format!(
                    "the event has no `command`: give one of {}",
                    COMMANDS.join(", ")
                ))
            }
        };
        let list = |field: &str| -> Result<Vec<String>, String> {
            match fields.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_string).ok_or_else(|| {
                            format!(
                                "the event's `{field}` must be a list of strings; it holds {}",
                                kind_of(i)
                            )
                        })
                    })
                    .collect(),
                Some(other) => Err(format!(
                    "the event's `{field}` must be a list of strings; got {}",
                    kind_of(other)
                )),
            }
        };
        let policies = list("policies")?;
        let accounts = list("accounts")?;
        let dry_run = match fields.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "the event's `dry_run` must be true or false; got {}",
                    kind_of(other)
                ))
            }
        };
        if dry_run && !matches!(command.as_str(), "run" | "prune") {
            return Err(format!(
                "`dry_run` applies to run and prune only, not to {command} (which changes nothing)"
            ));
        }
        Ok(Event {
            command,
            policies,
            accounts,
            dry_run,
        })
    }

    /// The child's command line after the executable.
    fn args(&self, config: &Path, time_limit: Option<Duration>) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--config".into(), config.into()];
        for s in ["-o", "json", "--log-format", "json", &self.command] {
            a.push(s.into());
        }
        for p in &self.policies {
            a.push("--policy".into());
            a.push(p.into());
        }
        for id in &self.accounts {
            a.push("--account".into());
            a.push(id.into());
        }
        if matches!(self.command.as_str(), "run" | "prune") {
            if self.dry_run {
                a.push("--dry-run".into());
            }
            if let Some(limit) = time_limit {
                a.push("--time-limit".into());
                a.push(format!("{}ms", limit.as_millis()).into());
            }
        }
        a
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Why an invocation failed, as Lambda reports it (`errorType`, `errorMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error_type: &'static str,
    pub message: String,
}

impl Failure {
    fn bad_event(message: String) -> Failure {
        Failure {
            error_type: "autosnap.BadEvent",
            message,
        }
    }
    fn failed(message: String) -> Failure {
        Failure {
            error_type: "autosnap.Failure",
            message: truncate(message),
        }
    }
}

impl From<Failure> for lambda_runtime::Diagnostic {
    fn from(f: Failure) -> Self {
        lambda_runtime::Diagnostic {
            error_type: f.error_type.into(),
            error_message: f.message,
        }
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" … (truncated; the function's log has the whole report)");
    }
    s
}

/// One invocation: `event` until `deadline` (None: no limit).
pub async fn handle(event: Value, deadline: Option<SystemTime>) -> Result<Value, Failure> {
    let event = Event::parse(&event).map_err(Failure::bad_event)?;
    let margin = match std::env::var(MARGIN_VAR) {
        Ok(m) if !m.trim().is_empty() => autosnap_core::duration::parse_length(m.trim())
            .map_err(|e| Failure::failed(format!("{MARGIN_VAR}={m}: {e}")))?,
        _ => DEFAULT_MARGIN,
    };
    let source = ConfigSource::from_env(|v| std::env::var(v).ok())
        .map_err(|e| Failure::failed(e.to_string()))?;
    let text = fetch_config(&source).await?;
    let config = PrivateConfig::write(&text)
        .map_err(|e| Failure::failed(format!("cannot write the config for the run: {e}")))?;
    let time_limit = deadline.map(|d| {
        d.duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(margin)
    });
    let exe = std::env::current_exe()
        .map_err(|e| Failure::failed(format!("cannot find autosnap's own executable: {e}")))?;
    let args = event.args(config.path(), time_limit);
    tracing::info!(
        command = %event.command,
        time_limit_ms = time_limit.map(|t| t.as_millis() as u64),
        config = %source.describe(),
        "running autosnap {}",
        event.command
    );
    let child = tokio::task::spawn_blocking(move || run_child(&exe, &args))
        .await
        .map_err(|e| Failure::failed(format!("the run's task failed: {e}")))?
        .map_err(|e| Failure::failed(format!("cannot run autosnap: {e}")))?;
    drop(config);
    result(&event.command, child)
}

async fn fetch_config(source: &ConfigSource) -> Result<String, Failure> {
    if let ConfigSource::Inline(text) = source {
        return Ok(text.clone());
    }
    // Region, credentials and endpoint from the function's environment, as the SDK finds them.
    let ctx = AwsContext::connect(&AwsSettings::default())
        .await
        .map_err(|e| Failure::failed(format!("cannot read {}: {e}", source.describe())))?;
    source
        .fetch(&ctx)
        .await
        .map_err(|e| Failure::failed(error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        cause = c.source();
    }
    s
}

/// The config text in a file only this user can read (autosnap refuses a config others could
/// change), removed when dropped.
struct PrivateConfig(PathBuf);

impl PrivateConfig {
    fn write(text: &str) -> std::io::Result<PrivateConfig> {
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "autosnap-config-{}-{nanos}.toml",
            std::process::id()
        ));
        // create_new: never through a file or link someone else put there.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let file = PrivateConfig(path);
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(file)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the child did: its exit, its standard output and the last error object it logged.
struct Child {
    code: Option<i32>,
    stdout: Vec<u8>,
    error: Option<Value>,
}

/// Runs the command; its log lines go on to this process's standard error as they come.
fn run_child(exe: &Path, args: &[OsString]) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(exe)
        // Not `bootstrap`: the child runs the command, not another runtime loop.
        .arg0("autosnap")
        .args(args)
        .env_remove(config_source::INLINE_VAR)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut last_error = None;
        let mut out = std::io::stderr();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(out, "{line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v.get("error").is_some_and(Value::is_object) {
                    last_error = Some(v["error"].clone());
                }
            }
        }
        last_error
    });
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().expect("piped"), &mut stdout)?;
    let status = child.wait()?;
    let error = errors.join().unwrap_or(None);
    Ok(Child {
        code: status.code(),
        stdout,
        error,
    })
}

/// The function's response for the child's outcome, or the error Lambda reports.
fn result(command: &str, child: Child) -> Result<Value, Failure> {
    let error_text = child.error.as_ref().map(|e| {
        let kind = e["kind"].as_str().unwrap_or("failed");
        let message = e["message"].as_str().unwrap_or_default();
        format!("{kind}: {message}")
    });
    let Some(code) = child.code else {
        return Err(Failure::failed(format!(
            "autosnap {command} was killed by a signal{}",
            error_text.map(|e| format!(" ({e})")).unwrap_or_default()
        )));
    };
    let report: Option<Value> = serde_json::from_slice(&child.stdout).ok();
    match (code, report) {
        (0, Some(report)) => {
            let left = left_of(&report);
            Ok(json!({
                "command": command,
                "exit_code": code,
                "complete": left.is_empty(),
                "report": report,
                "left": left,
            }))
        }
        (3, Some(report)) => {
            // The whole report goes to the log; the error message says what failed.
            tracing::error!(
                report = %report,
                "autosnap {command} partly failed"
            );
            let mut message =
                error_text.unwrap_or_else(|| format!("autosnap {command} partly failed"));
            let failures = failures_of(&report);
            if !failures.is_empty() {
                message.push_str(": ");
                message.push_str(&failures.join("; "));
            }
            Err(Failure {
                error_type: "autosnap.PartialFailure",
                message: truncate(message),
            })
        }
        (code, _) => Err(Failure::failed(error_text.unwrap_or_else(|| {
            format!(
                "autosnap {command} exited with {code} without an error message{}",
                if code == 101 {
                    " (it panicked; its log says where)"
                } else {
                    ""
                }
            )
        }))),
    }
}

/// What a run did not start (`left` of each report), with the account in a run across accounts.
fn left_of(report: &Value) -> Vec<Value> {
    let mut left = Vec::new();
    match report.get("accounts").and_then(Value::as_array) {
        Some(accounts) => {
            for a in accounts {
                for l in a["report"]["left"].as_array().into_iter().flatten() {
                    let mut l = l.clone();
                    if let Some(obj) = l.as_object_mut() {
                        obj.insert("account_id".into(), a["account_id"].clone());
                    }
                    left.push(l);
                }
            }
        }
        None => left.extend(
            report["report"]["left"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        ),
    }
    left
}

/// One line per failure in a report: failed accounts and failed steps.
fn failures_of(report: &Value) -> Vec<String> {
    fn steps(report: &Value, prefix: &str, out: &mut Vec<String>) {
        for f in report["failures"].as_array().into_iter().flatten() {
            out.push(format!(
                "{prefix}policy {} {} {} in {}: {}",
                f["policy"].as_str().unwrap_or("?"),
                f["action"].as_str().unwrap_or("?"),
                f["target_id"].as_str().unwrap_or("?"),
                f["region"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?"),
            ));
        }
    }
    let mut out = Vec::new();
    match report.get("accounts").and_then(Value::as_array) {
        Some(accounts) => {
            for a in accounts {
                let id = a["account_id"].as_str().unwrap_or("?");
                if let Some(e) = a["error"].as_str() {
                    out.push(format!("account {id}: {e}"));
                }
                steps(&a["report"], &format!("account {id}: "), &mut out);
            }
        }
        None => steps(&report["report"], "", &mut out),
    }
    out
}

// ---- the runtime loop and lambda-invoke ---------------------------------------------------

fn init_json_logging() {
    let filter = match std::env::var("AUTOSNAP_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new("warn,autosnap=info,autosnap_aws=info,autosnap_core=info"),
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Polls the Lambda Runtime API for events until the environment is torn down.
fn runtime_loop() -> ExitCode {
    init_json_logging();
    let missing: Vec<&str> = RUNTIME_VARS
        .into_iter()
        .filter(|v| std::env::var_os(v).is_none())
        .collect();
    if !missing.is_empty() {
        tracing::error!(
            "started as `bootstrap` outside AWS Lambda: {} not set (rename the executable to \
             run autosnap's commands)",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handler = lambda_runtime::service_fn(|e: lambda_runtime::LambdaEvent<Value>| async move {
        let deadline = UNIX_EPOCH + Duration::from_millis(e.context.deadline);
        let outcome = handle(e.payload, Some(deadline)).await;
        if let Err(f) = &outcome {
            tracing::error!(error_type = f.error_type, "{}", f.message);
        }
        outcome
    });
    match rt.block_on(lambda_runtime::run(handler)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("the Lambda runtime loop ended: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `lambda-invoke --event FILE [--deadline-ms EPOCH_MS]`: prints the response, or
/// `{"errorType": …, "errorMessage": …}` as the function would report it (exit 1).
fn invoke_once(args: &[OsString]) -> ExitCode {
    init_json_logging();
    let mut event_file = None;
    let mut deadline = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.to_str(), it.next()) {
            (Some("--event"), Some(v)) => event_file = Some(PathBuf::from(v)),
            (Some("--deadline-ms"), Some(v)) => match v.to_str().and_then(|v| v.parse().ok()) {
                Some(ms) => deadline = Some(UNIX_EPOCH + Duration::from_millis(ms)),
                None => return usage("--deadline-ms takes milliseconds since 1970"),
            },
            _ => {
                return usage("usage: autosnap lambda-invoke --event FILE [--deadline-ms EPOCH_MS]")
            }
        }
    }
    let Some(file) = event_file else {
        return usage("usage: autosnap lambda-invoke --event FILE [--deadline-ms EPOCH_MS]");
    };
    let event = match std::fs::read(&file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return usage(&format!("cannot read the event {}: {e}", file.display())),
    };
    let rt = match tokio_runtime() {
        Ok(rt) => rt,
        Err(e) => return usage(&format!("cannot start the async runtime: {e}")),
    };
    match rt.block_on(handle(event, deadline)) {
        Ok(response) => {
            println!("{response}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            let mut m = Map::new();
            m.insert("errorType".into(), f.error_type.into());
            m.insert("errorMessage".into(), f.message.into());
            println!("{}", Value::Object(m));
            ExitCode::FAILURE
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_a_command_and_optional_subsets() {
        let e = Event::parse(&json!({
            "command": "run", "policies": ["daily"], "accounts": ["111111111111"], "dry_run": true
        }))
        .unwrap();
        assert_eq!(
            e,
            Event {
                command: "run".into(),
                policies: vec!["daily".into()],
                accounts: vec!["111111111111".into()],
                dry_run: true
            }
        );
        let args = e.args(Path::new("/tmp/c.toml"), Some(Duration::from_millis(1500)));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--config",
                "/tmp/c.toml",
                "-o",
                "json",
                "--log-format",
                "json",
                "run",
                "--policy",
                "daily",
                "--account",
                "111111111111",
                "--dry-run",
                "--time-limit",
                "1500ms"
            ]
        );
        // status and plan have no time limit.
        let s = Event::parse(&json!({"command": "status"})).unwrap();
        assert!(!s
            .args(Path::new("c"), Some(Duration::ZERO))
            .iter()
            .any(|a| a == "--time-limit"));
    }

    #[test]
    fn a_wrong_event_is_refused_naming_the_field_and_what_is_allowed() {
        for (event, expected) in [
            (json!({"command": "run", "policy": ["x"]}), "unknown field `policy` in the event: allowed are command, policies, accounts, dry_run"),
            (json!({"command": "backup"}), "unknown command `backup` in the event's `command`: allowed are run, prune, status, plan"),
            (json!({}), "the event has no `command`"),
            (json!(["run"]), "must be a JSON object"),
            (json!({"command": "run", "policies": "daily"}), "`policies` must be a list of strings; got a string"),
            (json!({"command": "run", "accounts": [1]}), "`accounts` must be a list of strings; it holds a number"),
            (json!({"command": "status", "dry_run": true}), "`dry_run` applies to run and prune only"),
            (json!({"command": "prune", "dry_run": "yes"}), "`dry_run` must be true or false"),
        ] {
            let e = Event::parse(&event).unwrap_err();
            assert!(e.contains(expected), "{event}: {e}");
        }
    }

    #[test]
    fn left_and_failures_are_gathered_across_accounts() {
        let report = json!({"accounts": [
            {"account_id": "111111111111", "ok": true, "error": null,
             "report": {"left": [{"action": "copy"}], "failures": []}},
            {"account_id": "222222222222", "ok": false, "error": "role missing"}
        ]});
        assert_eq!(
            left_of(&report),
            vec![json!({"action": "copy", "account_id": "111111111111"})]
        );
        assert_eq!(failures_of(&report), ["account 222222222222: role missing"]);
        assert!(truncate("é".repeat(MAX_MESSAGE)).len() < MAX_MESSAGE + 100);
    }
}
