//! The `autosnap` binary: parse the command line, set up logging, run one
//! command, and turn its result into a documented exit code. Everything else
//! lives in the modules below and in the library crates.

mod cli;
mod commands;
mod exit;
mod lambda;
mod output;
mod progress;
mod settings;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::FromArgMatches;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, GlobalArgs, LogFormat, OutputFormat, SnapshotCommand};
use crate::exit::{classify_error, exit_for_error, Exit, UsageError};

/// Environment variable with a tracing filter that replaces -v/-q.
const LOG_ENV: &str = "AUTOSNAP_LOG";

fn main() -> ExitCode {
    // The freeze watchdog is this same binary in a hidden mode: it must start
    // before anything else (no config, no logging to files it could block on).
    if let Some(code) = autosnap_freeze::watchdog_entry(std::env::args_os()) {
        std::process::exit(code);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    // Named `bootstrap` (a Lambda deployment), it is the Lambda runtime loop instead.
    if let Some(code) = lambda::entry(&args) {
        return code;
    }
    // Before clap has parsed anything, a usage error must still come out as
    // JSON when the command line asked for JSON.
    output::set_json_mode(json_requested(&args));
    let (cli, command_name) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => return report_clap_error(e),
    };
    output::set_json_mode(cli.global.output == OutputFormat::Json);
    init_logging(&cli.global);
    if let Err(err) = check_output_format(cli.global.output, &command_name) {
        report_error(&err);
        return ExitCode::from(exit_for_error(&err).code());
    }
    if holds_keys_or_freezes(&cli.command) {
        // A core dump would write repository keys, or a frozen process's
        // memory, to disk; off for the whole process (hooks inherit the limit).
        if let Err(e) = autosnap_freeze::harden::disable_core_dumps() {
            tracing::warn!("cannot disable core dumps: {e}");
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::report_error(
                "failed",
                &format!("cannot start the async runtime: {e}"),
                None,
            );
            return ExitCode::from(Exit::Failure.code());
        }
    };

    let result = runtime.block_on(commands::run(cli));
    let exit = match result {
        Ok(exit) => exit,
        Err(err) => {
            report_error(&err);
            exit_for_error(&err)
        }
    };
    ExitCode::from(exit.code())
}

/// Commands that open a repository (its keys) or may freeze filesystems.
fn holds_keys_or_freezes(command: &Command) -> bool {
    match command {
        Command::Archive(_) | Command::Restore(_) | Command::Repo(_) => true,
        // Policies may freeze (consistency) and may archive.
        Command::Run(_) | Command::Daemon(_) => true,
        Command::TestRestore(args) => args.repo.is_some(),
        Command::Snapshot(SnapshotCommand::Create(args)) => {
            let c = &args.consistency;
            c.freeze || !c.pre.is_empty() || !c.post.is_empty()
        }
        _ => false,
    }
}

/// Parses the command line; also returns the command's words after
/// `autosnap` (canonical names, not aliases), e.g. "snapshot list".
fn parse(args: Vec<OsString>) -> Result<(Cli, String), clap::Error> {
    let matches = cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let mut words = Vec::new();
    let mut m = &matches;
    while let Some((name, sub)) = m.subcommand() {
        words.push(name);
        m = sub;
    }
    Ok((cli, words.join(" ")))
}

/// Whether the command line asks for `-o json`, in any of clap's spellings
/// (`-o json`, `-ojson`, `-o=json`, `--output json`, `--output=json`, and
/// `-o` last in a cluster such as `-qo json`); the last one given wins.
fn json_requested(args: &[OsString]) -> bool {
    let mut json = false;
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let value = if let Some(rest) = arg.strip_prefix("--output") {
            match rest.strip_prefix('=') {
                Some(v) => Some(v.to_string()),
                None if rest.is_empty() => args.next().map(|v| v.to_string()),
                None => None,
            }
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.starts_with('-')) {
            // Flags without values (-v, -q) may come before the o.
            let flags = cluster.trim_start_matches(['v', 'q']);
            match flags.strip_prefix('o') {
                Some("") => args.next().map(|v| v.to_string()),
                Some(v) => Some(v.trim_start_matches('=').to_string()),
                None => None,
            }
        } else {
            None
        };
        if let Some(v) = value {
            json = v == "json";
        }
    }
    json
}

/// A clap error: as clap prints it, or with `-o json` as the error object
/// (help and --version are not errors and print as usual).
fn report_clap_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !output::json_mode()
        || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
    {
        e.exit();
    }
    let rendered = e.render().to_string();
    let message = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap renders the whole help here; say what is missing instead.
        let usage = rendered
            .lines()
            .find_map(|l| l.strip_prefix("Usage: "))
            .unwrap_or("autosnap <COMMAND>");
        format!("a subcommand is required: {usage} (--help lists them)")
    } else {
        // The message and its tips; not the usage line or "try --help".
        rendered
            .split("\n\n")
            .filter(|p| !p.starts_with("Usage:") && !p.starts_with("For more information"))
            // One line: clap wraps long lists (of possible values) onto the next.
            .map(|p| {
                let p = p.trim().trim_start_matches("error: ");
                p.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let resource = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => Some(arg.as_str()),
        _ => None,
    };
    output::report_error("usage", &message, resource);
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage.code()))
}

/// `-o FORMAT` is global, but each command prints only some formats.
fn check_output_format(format: OutputFormat, command: &str) -> anyhow::Result<()> {
    let supported = OutputFormat::supported_by(command);
    if supported.contains(&format) {
        return Ok(());
    }
    let message = match command {
        "completions" | "man" => format!(
            "`autosnap {command}` prints a {}, never {}: run it without -o {}",
            if command == "man" {
                "man page"
            } else {
                "shell script"
            },
            format.name(),
            format.name()
        ),
        _ => {
            let names: Vec<String> = supported
                .iter()
                .map(|f| format!("-o {}", f.name()))
                .collect();
            format!(
                "`autosnap {command}` prints {}, not -o {}{}",
                names.join(" or "),
                format.name(),
                if format == OutputFormat::Prometheus {
                    " (only `autosnap status` prints prometheus)"
                } else {
                    ""
                }
            )
        }
    };
    Err(UsageError(message).into())
}

/// Prints an error and its causes, one per line, without a backtrace; with
/// `-o json`, one error object (kind, message, resource) on one line.
fn report_error(err: &anyhow::Error) {
    let mut text = err.to_string();
    let mut last = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        // Skip causes already spelled out by their parent's message.
        if !last.contains(&c) {
            text.push_str(&format!("\n  caused by: {c}"));
        }
        last = c;
    }
    let class = classify_error(err);
    output::report_error(class.kind, &text, class.resource.as_deref());
}

fn init_logging(global: &GlobalArgs) {
    let filter = match std::env::var(LOG_ENV) {
        Ok(f) if !f.trim().is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(default_filter(global.verbose, global.quiet)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(global.verbose >= 2)
        .with_ansi(std::io::stderr().is_terminal());
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().init(),
    }
}

/// autosnap's own crates log at info by default; the AWS SDK stays quiet
/// unless `-vvv`. Each level is described in `-v`'s long help and the README.
fn default_filter(verbose: u8, quiet: bool) -> String {
    if quiet {
        return "error".into();
    }
    // Every crate of the workspace, named in full (a directive's target is a
    // prefix match today, but the list should not rely on it).
    let ours = [
        "autosnap",
        "autosnap_aws",
        "autosnap_core",
        "autosnap_engine",
        "autosnap_freeze",
        "autosnap_ports",
        "autosnap_repo",
    ];
    let (own, rest) = match verbose {
        0 => ("info", "warn"),
        1 => ("debug", "warn"),
        2 => ("trace", "info"),
        _ => ("trace", "trace"),
    };
    let mut f = rest.to_string();
    for c in ours {
        f.push_str(&format!(",{c}={own}"));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn json_is_found_in_every_spelling_of_output() {
        for line in [
            "autosnap -o json snapshot list",
            "autosnap snapshot list -ojson",
            "autosnap snapshot list -o=json",
            "autosnap --output json snapshot list",
            "autosnap snapshot list --output=json",
            "autosnap -qo json snapshot",
            "autosnap -vvojson snapshot",
            "autosnap -o table snapshot list -o json",
        ] {
            assert!(json_requested(&args(line)), "{line}");
        }
        for line in [
            "autosnap snapshot list",
            "autosnap -o json snapshot list -o table",
            "autosnap --output-file json",
            "autosnap snapshot create -- -o json",
            "autosnap --tag json snapshot list",
        ] {
            assert!(!json_requested(&args(line)), "{line}");
        }
    }

    #[test]
    fn every_workspace_crate_follows_verbosity() {
        let f = default_filter(1, false);
        for c in [
            "autosnap_freeze",
            "autosnap_repo",
            "autosnap_aws",
            "autosnap_engine",
            "autosnap_ports",
        ] {
            assert!(f.contains(&format!("{c}=debug")), "{f}");
        }
        assert!(f.starts_with("warn,"), "others stay at warn: {f}");
        assert_eq!(default_filter(3, true), "error");
    }
}
