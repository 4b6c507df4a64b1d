//! One module per command group; each exposes `run` functions that take
//! parsed arguments and the resolved settings and return an exit code.

mod accounts;
mod ami;
mod archive;
mod backup_account;
mod config;
mod config_accounts;
mod confirm;
mod consistent;
mod docs;
mod iam;
mod init;
mod lock;
mod policy;
mod recycle_bin;
mod repo;
pub mod restore_test;
mod retention;
mod snapshot;
mod tier;
mod time_limit;
mod volume;

use autosnap_aws::AwsContext;

use crate::cli::{
    AmiCommand, Cli, Command, ConfigCommand, RetentionCommand, SnapshotCommand, VolumeCommand,
};
use crate::exit::Exit;
use crate::settings::{self, Settings};

/// What every command gets: the settings, the output format and whether
/// progress may be drawn.
pub struct Env {
    pub settings: Settings,
    pub output: crate::cli::OutputFormat,
    pub progress: bool,
    /// The process's one AWS context, made by the first [`Env::connect`].
    aws: tokio::sync::OnceCell<std::sync::Arc<AwsContext>>,
}

impl Env {
    /// Connects to AWS (region and credentials are checked here) once per process: every
    /// later call gets the same context, so credentials are resolved, the role assumed and
    /// the caller's identity asked once, and region clients are shared.
    pub async fn connect(&self) -> anyhow::Result<std::sync::Arc<AwsContext>> {
        let ctx = self
            .aws
            .get_or_try_init(|| async {
                AwsContext::connect(&self.settings.aws)
                    .await
                    .map(std::sync::Arc::new)
            })
            .await?;
        Ok(ctx.clone())
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    // Commands that need no configuration.
    match &cli.command {
        Command::Completions(args) => return docs::completions(args),
        Command::Retention(RetentionCommand::Simulate(args)) => {
            return retention::simulate(cli.global.output, args)
        }
        Command::Man(args) => return docs::man(args),
        Command::IamPolicy(args) => return iam::policy(args),
        _ => {}
    }

    // `init` creates the config file, so it does not read one.
    let config = match &cli.command {
        Command::Init(_) => settings::LoadedConfig {
            path: None,
            file: Default::default(),
        },
        _ => match settings::load(
            cli.global.config.as_deref(),
            cli.global.allow_insecure_config,
        ) {
            Ok(config) => config,
            // Checking the file is `config check`'s job: it reports the problem as its result.
            Err(error) if matches!(cli.command, Command::Config(ConfigCommand::Check)) => {
                return config::report_unusable(cli.global.output, &error);
            }
            Err(error) => {
                return Err(crate::exit::ConfigProblem {
                    path: cli.global.config.clone(),
                    error,
                }
                .into())
            }
        },
    };
    let settings = match settings::resolve(&cli.global, config) {
        Ok(settings) => settings,
        Err(error) if matches!(cli.command, Command::Config(ConfigCommand::Check)) => {
            return config::report_unusable(cli.global.output, &error);
        }
        Err(error) => return Err(error),
    };
    let env = Env {
        settings,
        output: cli.global.output,
        progress: !cli.global.no_progress && !cli.global.quiet,
        aws: tokio::sync::OnceCell::new(),
    };

    match cli.command {
        Command::Init(args) => init::run(&env, &cli.global, &args).await,
        Command::Config(ConfigCommand::Show) => config::show(&env),
        Command::Config(ConfigCommand::Check) => config::check(&env).await,
        Command::Volume(VolumeCommand::List(args)) => volume::list(&env, &args).await,
        Command::Volume(VolumeCommand::Create(args)) => volume::create(&env, &args).await,
        Command::Snapshot(SnapshotCommand::List(args)) => snapshot::list(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Create(args)) => snapshot::create(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Delete(args)) => snapshot::delete(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Copy(args)) => snapshot::copy(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Lock(args)) => lock::lock(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Unlock(args)) => lock::unlock(&env, &args).await,
        Command::Snapshot(SnapshotCommand::Archive(args)) => tier::archive(&env, &args).await,
        Command::Snapshot(SnapshotCommand::RestoreTier(args)) => {
            tier::restore_tier(&env, &args).await
        }
        Command::Snapshot(SnapshotCommand::Recover(args)) => {
            recycle_bin::recover_snapshots(&env, &args).await
        }
        Command::Ami(AmiCommand::Recover(args)) => recycle_bin::recover_images(&env, &args).await,
        Command::Ami(AmiCommand::Create(args)) => ami::create(&env, &args).await,
        Command::Ami(AmiCommand::FromSnapshot(args)) => ami::from_snapshot(&env, &args).await,
        Command::Ami(AmiCommand::List(args)) => ami::list(&env, &args).await,
        Command::Ami(AmiCommand::Delete(args)) => ami::delete(&env, &args).await,
        Command::Ami(AmiCommand::Metadata(args)) => ami::metadata(&env, &args).await,
        Command::Ami(AmiCommand::Store(args)) => ami::store(&env, &args).await,
        Command::Ami(AmiCommand::Restore(args)) => ami::restore(&env, &args).await,
        Command::Plan(args) => policy::plan(&env, &args).await,
        Command::Run(args) => policy::run(&env, &args).await,
        Command::Prune(args) => policy::prune(&env, &args).await,
        Command::Status(args) => policy::status(&env, &args).await,
        Command::Daemon(args) => policy::daemon(&env, &args).await,
        Command::Repo(command) => repo::run(&env, command).await,
        Command::Upload(args) => archive::upload(&env, &args).await,
        Command::Download(args) => archive::download(&env, &args).await,
        Command::Archive(args) => archive::archive(&env, &args).await,
        Command::Restore(args) => archive::restore(&env, &args).await,
        Command::TestRestore(args) => restore_test::test_restore(&env, &args).await,
        Command::Completions(_)
        | Command::Man(_)
        | Command::Retention(_)
        | Command::IamPolicy(_) => {
            unreachable!("handled above")
        }
    }
}

/// SIGINT and SIGTERM during a `--wait`. Listening starts before the
/// resource is created: a signal that arrives while it is being created is
/// kept and ends the wait at once, so the id of what now exists is printed
/// rather than lost with a silent exit.
///
/// Listening replaces a signal's default action (end the process) for the
/// rest of the process: tokio cannot give it back. So one task owns the
/// signals and hands each to the [`Interrupt`]s alive at that moment; when
/// none is alive (the wait is over, later steps run), it ends the process as
/// the default action would have (exit 130), so no step after a wait becomes
/// deaf to Ctrl-C.
pub struct Interrupt {
    signals: tokio::sync::broadcast::Receiver<()>,
}

/// The sender the signal task hands signals to; set by the first [`Interrupt::listen`].
static SIGNALS: std::sync::OnceLock<tokio::sync::broadcast::Sender<()>> =
    std::sync::OnceLock::new();

impl Interrupt {
    pub fn listen() -> anyhow::Result<Interrupt> {
        if let Some(tx) = SIGNALS.get() {
            return Ok(Interrupt {
                signals: tx.subscribe(),
            });
        }
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind| {
            signal(kind)
                .map_err(|e| anyhow::anyhow!("cannot listen for Ctrl-C (SIGINT/SIGTERM): {e}"))
        };
        let (int, term) = (
            listen(SignalKind::interrupt())?,
            listen(SignalKind::terminate())?,
        );
        let (tx, signals) = tokio::sync::broadcast::channel(4);
        if SIGNALS.set(tx.clone()).is_ok() {
            tokio::spawn(hand_out_signals(int, term, tx));
            Ok(Interrupt { signals })
        } else {
            // Another listener won the race to start the task: use its sender.
            let tx = SIGNALS.get().expect("set by the winner");
            Ok(Interrupt {
                signals: tx.subscribe(),
            })
        }
    }

    /// `wait`'s result, or `None` when a signal came first.
    pub async fn or<T>(&mut self, wait: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            // A closed or lagged channel also means a signal came (or nothing more will).
            _ = self.signals.recv() => None,
            r = wait => Some(r),
        }
    }
}

/// Hands each SIGINT/SIGTERM to the live [`Interrupt`]s, or ends the process
/// when there is none (see [`Interrupt`]).
async fn hand_out_signals(
    mut int: tokio::signal::unix::Signal,
    mut term: tokio::signal::unix::Signal,
    tx: tokio::sync::broadcast::Sender<()>,
) {
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if tx.send(()).is_err() {
            eprintln!("interrupted");
            std::process::exit(i32::from(crate::exit::Exit::Interrupted.code()));
        }
    }
}

/// Snapshot ids once each, in the order given: a repeated id is one request
/// and one result row.
pub fn unique_snapshot_ids(ids: &[autosnap_core::ids::SnapshotId]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .map(|i| i.to_string())
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// Prints the per-snapshot results of a command that acts on snapshot ids
/// (`lock`, `unlock`, `archive`, `restore-tier`), names on stderr how many were
/// not done (`result` refused, missing or failed), and picks the exit.
pub fn finish_snapshot_results<T: serde::Serialize>(
    env: &Env,
    results: &[T],
    result_of: impl Fn(&T) -> &str,
    table: impl FnOnce() -> comfy_table::Table,
    verb: &str,
) -> anyhow::Result<Exit> {
    crate::output::emit(env.output, &results, table)?;
    let bad = results
        .iter()
        .filter(|r| matches!(result_of(r), "refused" | "missing" | "failed"))
        .count();
    let ok = results.len() - bad;
    if bad > 0 {
        crate::output::report_failed_items(&format!(
            "{verb} {ok} of {} snapshot(s); {bad} not (see {})",
            results.len(),
            crate::output::field_hint(&["REASON"])
        ));
    }
    Ok(Exit::from_counts(ok, bad))
}

/// Says on stderr that the wait stopped and the work goes on without us.
pub fn report_interrupted(what: &str, check: &str) {
    report_interrupted_with(what, check, &[]);
}

/// [`report_interrupted`], naming the steps the command did not get to
/// (each with what to do instead), so nothing is silently left undone.
pub fn report_interrupted_with(what: &str, check: &str, not_done: &[String]) {
    let message = format!(
        "stopped waiting for {what}; it continues in AWS (nothing was cancelled): check with `{check}`"
    );
    if crate::output::json_mode() {
        let mut message = message;
        for step in not_done {
            message.push_str("; not done: ");
            message.push_str(step);
        }
        eprintln!(
            "{}",
            crate::output::error_object("interrupted", &message, None)
        );
    } else {
        eprintln!("interrupted: {message}");
        for step in not_done {
            eprintln!("  not done: {step}");
        }
    }
}

/// Prints a dry run's plan: the JSON document, or the text followed by a
/// line saying nothing was changed (so a reader never mistakes it for a run).
pub fn print_plan<T: serde::Serialize + ?Sized>(
    env: &Env,
    plan: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match env.output {
        crate::cli::OutputFormat::Json => crate::output::print_json(plan),
        _ => {
            let mut text = text();
            text.push_str("\ndry run: nothing was created or changed");
            crate::output::print(&text);
            Ok(())
        }
    }
}

/// Tags as one line for a plan: `Name=web, autosnap:managed=true`.
pub fn tag_line(tags: &autosnap_core::tags::Tags) -> String {
    if tags.is_empty() {
        return "none".into();
    }
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
