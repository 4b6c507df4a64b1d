//! The `autosnap` binary: parse the command line, set up logging, run one
//! command, and turn its result into a documented exit code. Everything else
//! lives in the modules below and in the library crates.

mod cli;
mod commands;
mod exit;
mod output;
mod progress;
mod settings;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, GlobalArgs, LogFormat, SnapshotCommand};
use crate::exit::{exit_for_error, Exit};

/// Environment variable with a tracing filter that replaces -v/-q.
const LOG_ENV: &str = "AUTOSNAP_LOG";

fn main() -> ExitCode {
    // The freeze watchdog is this same binary in a hidden mode: it must start
    // before anything else (no config, no logging to files it could block on).
    if let Some(code) = autosnap_freeze::watchdog_entry(std::env::args_os()) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    init_logging(&cli.global);
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
            eprintln!("error: cannot start the async runtime: {e}");
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
        Command::Snapshot(SnapshotCommand::Create(args)) => {
            let c = &args.consistency;
            c.freeze || !c.pre.is_empty() || !c.post.is_empty()
        }
        _ => false,
    }
}

/// Prints an error and its causes, one per line, without a backtrace.
fn report_error(err: &anyhow::Error) {
    let mut text = format!("error: {err}");
    let mut last = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        // Skip causes already spelled out by their parent's message.
        if !last.contains(&c) {
            text.push_str(&format!("\n  caused by: {c}"));
        }
        last = c;
    }
    eprintln!("{text}");
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
/// unless `-vvv`.
fn default_filter(verbose: u8, quiet: bool) -> String {
    if quiet {
        return "error".into();
    }
    let ours = ["autosnap", "autosnap_aws", "autosnap_core"];
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
