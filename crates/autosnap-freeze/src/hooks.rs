//! Application hooks: shell commands run before the freeze (flush and lock a
//! database) and after the thaw (unlock it), with a timeout, their output
//! captured for the log.
//!
//! Each hook runs as `/bin/sh -c CMD` in a process group of its own, so a
//! timeout kills the whole group (the shell and everything it started), and a
//! Ctrl-C at the terminal reaches autosnap, not the hook. A hook may leave a
//! process running in the background on purpose (a session holding a database
//! lock until the post hook releases it); such a process should redirect its
//! output, because autosnap stops collecting output shortly after the shell
//! exits.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Output kept per stream; more is read (so the hook never blocks on a full
/// pipe) but dropped.
pub const HOOK_OUTPUT_LIMIT: usize = 64 * 1024;
/// After SIGTERM to a timed-out hook's process group, how long before SIGKILL.
pub const HOOK_KILL_GRACE: Duration = Duration::from_secs(2);
/// After the shell exits, how long to wait for the rest of its output (a
/// background process it left may hold the pipes open for much longer).
const OUTPUT_DRAIN_GRACE: Duration = Duration::from_millis(250);

/// What a hook printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutput {
    pub command: String,
    /// `None` when the hook was killed after its timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
    /// Output beyond [`HOOK_OUTPUT_LIMIT`] was dropped.
    pub truncated: bool,
}

/// Why a hook failed. Every variant that ran the hook keeps its output.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    // Messages show the command and output with obvious secrets redacted
    // ([`redact`]): they end up in logs and in the final error line.
    #[error("hook {:?} could not be started: {source}", redact(command))]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hook {:?} failed with exit status {code}{}", redact(&output.command), stderr_excerpt(output))]
    Failed { code: i32, output: HookOutput },
    #[error("hook {:?} was killed by signal {signal}{}", redact(&output.command), stderr_excerpt(output))]
    Killed { signal: i32, output: HookOutput },
    #[error(
        "hook {:?} did not finish within {timeout:?}; its process group was killed{}",
        redact(&output.command),
        stderr_excerpt(output)
    )]
    TimedOut {
        timeout: Duration,
        output: HookOutput,
    },
    #[error("waiting for hook {:?} failed: {source}", redact(command))]
    Wait {
        command: String,
        #[source]
        source: std::io::Error,
    },
}

impl HookError {
    /// The hook's output, when it ran.
    pub fn output(&self) -> Option<&HookOutput> {
        match self {
            HookError::Failed { output, .. }
            | HookError::Killed { output, .. }
            | HookError::TimedOut { output, .. } => Some(output),
            HookError::Spawn { .. } | HookError::Wait { .. } => None,
        }
    }

    /// How the hook ended, without its command line or output (for logs
    /// at info level).
    pub fn ending(&self) -> String {
        match self {
            HookError::Spawn { source, .. } => format!("could not be started: {source}"),
            HookError::Failed { code, .. } => format!("exit status {code}"),
            HookError::Killed { signal, .. } => format!("killed by signal {signal}"),
            HookError::TimedOut { timeout, .. } => format!("timed out after {timeout:?}"),
            HookError::Wait { source, .. } => format!("could not be waited for: {source}"),
        }
    }

    pub fn command(&self) -> &str {
        match self {
            HookError::Spawn { command, .. } | HookError::Wait { command, .. } => command,
            HookError::Failed { output, .. }
            | HookError::Killed { output, .. }
            | HookError::TimedOut { output, .. } => &output.command,
        }
    }
}

fn stderr_excerpt(output: &HookOutput) -> String {
    let last = output.stderr.trim_end().lines().last().unwrap_or("").trim();
    if last.is_empty() {
        String::new()
    } else {
        format!(": {}", redact(last))
    }
}

pub type HookResult = Result<HookOutput, HookError>;

/// `text` (a hook's command line or a line of its output) with obvious
/// secrets replaced by `***`, for logs and error messages:
///
/// - `-pSECRET` (mysql, mysqldump): `-p***`;
/// - `--password=X`, `--password X` and other long options whose name holds
///   `pass`, `pwd`, `secret`, `token` or `key`;
/// - `NAME=VALUE` words (environment assignments, `password=…` in connection
///   strings) whose name holds one of those;
/// - the password of a URL (`scheme://user:***@host`).
///
/// Quoted words stay whole (`--password='a b'` is redacted entirely). This
/// catches the usual ways of passing a password on a command line; it cannot
/// know every program's conventions, so the full command and output are
/// logged only at debug level.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut hide_next = false;
    for (word, separator) in shell_words(text) {
        if hide_next && !word.is_empty() {
            out.push_str("***");
            hide_next = false;
        } else {
            let (redacted, next) = redact_word(word);
            out.push_str(&redacted);
            hide_next = next;
        }
        out.push_str(separator);
    }
    out
}

/// Splits at whitespace outside quotes: (word, the whitespace after it).
fn shell_words(text: &str) -> Vec<(&str, &str)> {
    let mut words = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if !d.is_whitespace() {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                words.push((&text[start..i], &text[i..end]));
                start = end;
            }
            (None, _) => {}
        }
    }
    words.push((&text[start..], ""));
    words
}

fn secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let lower = lower.trim_start_matches(['\'', '"', '-']);
    if lower == "pwd" || lower == "oldpwd" {
        return false; // the working directory
    }
    ["pass", "pwd", "secret", "token", "key"]
        .iter()
        .any(|hint| lower.contains(hint))
}

/// One word redacted, and whether the next word is an option's secret value.
fn redact_word(word: &str) -> (String, bool) {
    if let Some(rest) = word.strip_prefix("-p") {
        if !rest.is_empty() && !rest.starts_with('-') {
            return ("-p***".into(), false);
        }
    }
    if let Some((name, _value)) = word.split_once('=') {
        let bare = name.trim_start_matches(['\'', '"']);
        let is_name = !bare.is_empty()
            && bare
                .trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if is_name && secret_name(bare) {
            return (format!("{name}=***"), false);
        }
    }
    if word.starts_with("--") && !word.contains('=') && secret_name(word) {
        return (word.to_string(), true);
    }
    // A quoted argument may hold several words (a connection string).
    for quote in ['\'', '"'] {
        if word.len() >= 2 && word.starts_with(quote) && word.ends_with(quote) {
            let inner = &word[1..word.len() - 1];
            return (format!("{quote}{}{quote}", redact(inner)), false);
        }
    }
    (redact_url_password(word), false)
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_url_password(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &word[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return word.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return word.to_string();
    };
    format!(
        "{}{}:***{}",
        &word[..authority_start],
        &authority[..colon],
        &word[authority_start + at..]
    )
}

/// Runs `/bin/sh -c cmd`, killing its process group after `timeout`.
pub fn run_hook(cmd: &str, timeout: Duration) -> HookResult {
    run_hook_with_env(cmd, timeout, &[])
}

/// [`run_hook`] with extra environment variables.
pub fn run_hook_with_env(cmd: &str, timeout: Duration, env: &[(&str, &str)]) -> HookResult {
    run_hook_observed(cmd, timeout, env, &|_| {})
}

/// [`run_hook_with_env`], telling `observe` the hook's process group id when
/// it starts and `None` when it is over (so that a signal can kill it).
pub(crate) fn run_hook_observed(
    cmd: &str,
    timeout: Duration,
    env: &[(&str, &str)],
    observe: &dyn Fn(Option<i32>),
) -> HookResult {
    let started = Instant::now();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        command: cmd.to_string(),
        source,
    })?;
    let group = i32::try_from(child.id()).unwrap_or(i32::MAX);
    observe(Some(group));
    let stdout = Capture::start(child.stdout.take());
    let stderr = Capture::start(child.stderr.take());

    let waited = wait_with_timeout(&mut child, group, timeout);
    observe(None);
    let deadline = Instant::now() + OUTPUT_DRAIN_GRACE;
    let (stdout, stdout_truncated) = stdout.finish(deadline);
    let (stderr, stderr_truncated) = stderr.finish(deadline);
    let status = match waited {
        Ok(status) => status,
        Err(source) => {
            return Err(HookError::Wait {
                command: cmd.to_string(),
                source,
            })
        }
    };
    let output = HookOutput {
        command: cmd.to_string(),
        status,
        stdout,
        stderr,
        duration: started.elapsed(),
        truncated: stdout_truncated || stderr_truncated,
    };
    match status {
        None => Err(HookError::TimedOut { timeout, output }),
        Some(status) if status.success() => Ok(output),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Err(HookError::Failed { code, output }),
            (None, Some(signal)) => Err(HookError::Killed { signal, output }),
            (None, None) => Err(HookError::Failed { code: -1, output }),
        },
    }
}

/// Waits for the hook; after `timeout`, SIGTERM to its group, then SIGKILL
/// after [`HOOK_KILL_GRACE`]. `Ok(None)` means it timed out.
fn wait_with_timeout(
    child: &mut Child,
    group: i32,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    kill_group(group, libc::SIGTERM);
    let grace_end = Instant::now() + HOOK_KILL_GRACE;
    while Instant::now() < grace_end && child.try_wait()?.is_none() {
        thread::sleep(Duration::from_millis(20));
    }
    // Also whatever the shell left behind in its group.
    kill_group(group, libc::SIGKILL);
    child.wait()?;
    Ok(None)
}

/// Sends `signal` to a process group (errors such as ESRCH, group gone, are moot).
pub(crate) fn kill_group(group: i32, signal: i32) {
    if group <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal; `group` is a process group we
    // created for the hook (its leader is our child, so the id cannot be
    // reused before we reap it) and is > 1, never "every process".
    unsafe {
        libc::killpg(group, signal);
    }
}

/// Collects one output stream on a thread.
struct Capture {
    buffer: Arc<Mutex<(Vec<u8>, bool)>>,
    done: Option<mpsc::Receiver<()>>,
}

impl Capture {
    fn start(stream: Option<impl Read + Send + 'static>) -> Self {
        let buffer = Arc::new(Mutex::new((Vec::new(), false)));
        let Some(mut stream) = stream else {
            return Self { buffer, done: None };
        };
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&buffer);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                        let room = HOOK_OUTPUT_LIMIT.saturating_sub(guard.0.len());
                        guard.0.extend_from_slice(&chunk[..n.min(room)]);
                        if n > room {
                            guard.1 = true;
                        }
                    }
                }
            }
            let _ = tx.send(());
        });
        Self {
            buffer,
            done: Some(rx),
        }
    }

    /// The output so far, waiting until `deadline` for the stream to end.
    fn finish(self, deadline: Instant) -> (String, bool) {
        if let Some(done) = self.done {
            let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let guard = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        (String::from_utf8_lossy(&guard.0).into_owned(), guard.1)
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn obvious_secrets_are_redacted() {
        for (given, expected) in [
            (
                "mysql -u root -psecret123 -e 'FLUSH TABLES'",
                "mysql -u root -p*** -e 'FLUSH TABLES'",
            ),
            ("mysqldump -p'two words' db", "mysqldump -p*** db"),
            ("pg_dump --password=hunter2 db", "pg_dump --password=*** db"),
            (
                "tool --api-token abc.def --verbose",
                "tool --api-token *** --verbose",
            ),
            (
                "MYSQL_PWD=hunter2 mysql -e 'FLUSH TABLES WITH READ LOCK'",
                "MYSQL_PWD=*** mysql -e 'FLUSH TABLES WITH READ LOCK'",
            ),
            (
                "AWS_SECRET_ACCESS_KEY=abc aws s3 ls",
                "AWS_SECRET_ACCESS_KEY=*** aws s3 ls",
            ),
            (
                "psql 'host=db user=app password=s3cr3t' -c 'CHECKPOINT'",
                "psql 'host=db user=app password=***' -c 'CHECKPOINT'",
            ),
            ("psql host=db password=s3cr3t", "psql host=db password=***"),
            (
                "curl https://admin:pa55@example.com/lock",
                "curl https://admin:***@example.com/lock",
            ),
            (
                "redis-cli -a x --pass  'a b'  save",
                "redis-cli -a x --pass  ***  save",
            ),
        ] {
            assert_eq!(redact(given), expected, "{given}");
        }
    }

    #[test]
    fn ordinary_commands_are_unchanged() {
        for text in [
            "mkdir -p /var/backups && sync",
            "fsfreeze --help",
            "cd $PWD && echo done",
            "PWD=/srv ls",
            "echo 'pre hook: flushing tables'",
            "sh -c 'exit 3'",
            "",
        ] {
            assert_eq!(redact(text), text);
        }
    }
}
