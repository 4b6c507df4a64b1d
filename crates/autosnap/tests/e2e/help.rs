//! Help that reads well, through the real binary: each command's own options
//! come first and the global ones under their own heading; `-o` offers only
//! the formats the command prints; `-v` shows what its help says it shows.

use std::process::Command;

use crate::support::imds::FakeImds;
use crate::support::{TestBed, REGION};

/// Flags every command accepts (a sample of GlobalArgs).
const GLOBAL_FLAGS: &[&str] = &[
    "--config",
    "--profile",
    "--region",
    "--endpoint-url",
    "--output",
    "--verbose",
    "--quiet",
    "--no-progress",
    "--log-format",
    "--allow-insecure-config",
    "--version",
];

fn help(bed: &TestBed, words: &[&str], flag: &str) -> String {
    let out = bed.bare_cmd().args(words).arg(flag).output().unwrap();
    assert!(out.status.success(), "{words:?} {flag}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        // Entries are indented by two spaces; their wrapped text by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// Every command path, e.g. ["snapshot", "create"], found by walking the help.
fn all_commands(bed: &TestBed) -> Vec<Vec<String>> {
    let mut found = vec![];
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        for sub in subcommands(&help(bed, &words, "--help")) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        found.push(path);
    }
    found
}

/// The lines of a help text that start a section ("Options:", "Global options:", …).
fn headings(help: &str) -> Vec<(usize, &str)> {
    help.lines()
        .enumerate()
        .filter(|(_, l)| {
            !l.starts_with(' ') && l.ends_with(':') && l.len() < 50 && !l.contains("Usage")
        })
        .collect()
}

#[test]
fn every_command_lists_its_own_options_before_the_global_ones() {
    let bed = TestBed::offline();
    let commands = all_commands(&bed);
    assert!(commands.len() > 40, "walked only {commands:?}");
    for path in &commands {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        for flag in ["-h", "--help"] {
            let text = help(&bed, &words, flag);
            let heads = headings(&text);
            let names: Vec<&str> = heads.iter().map(|(_, h)| *h).collect();
            assert_eq!(
                names.last(),
                Some(&"Global options:"),
                "`autosnap {} {flag}`: the global options come last, under their own heading:\n{text}",
                words.join(" ")
            );
            let global_at = heads.last().unwrap().0;
            for (i, line) in text.lines().enumerate() {
                let flag_name = line
                    .split_whitespace()
                    .find(|w| w.starts_with("--"))
                    .map(|w| w.trim_end_matches(['.', ',']));
                let Some(flag_name) = flag_name.filter(|_| line.starts_with("  -")) else {
                    continue;
                };
                let is_global = GLOBAL_FLAGS.contains(&flag_name);
                assert_eq!(
                    is_global,
                    i > global_at,
                    "`autosnap {} {flag}`: {flag_name} is in the wrong section:\n{text}",
                    words.join(" ")
                );
            }
        }
    }
}

#[test]
fn snapshot_create_help_shows_its_options_then_global_options() {
    let bed = TestBed::offline();
    let text = help(&bed, &["snapshot", "create"], "--help");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
    };
    assert!(at("Options:") < at("--tag <KEY=VALUE>"));
    assert!(at("--tag <KEY=VALUE>") < at("--wait"));
    assert!(at("--wait") < at("Consistency (mount path targets):"));
    assert!(at("Consistency (mount path targets):") < at("Global options:"));
    assert!(at("Global options:") < at("--region <REGION>"));
    assert!(at("Global options:") < at("--endpoint-url <URL>"));
}

/// The `-o` entry of a short help, on one line.
fn output_entry(text: &str) -> String {
    let start = text.find("-o, --output").expect("an -o entry");
    let rest = &text[start..];
    let end = rest[1..].find("\n  -").map_or(rest.len(), |e| e + 1);
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn output_lists_only_the_formats_the_command_prints() {
    let bed = TestBed::offline();
    let entry = output_entry(&help(&bed, &["snapshot", "list"], "-h"));
    assert!(entry.contains("[possible values: table, json]"), "{entry}");
    assert!(
        entry.contains("table or json; prometheus for `status`"),
        "{entry}"
    );
    let entry = output_entry(&help(&bed, &["status"], "-h"));
    assert!(
        entry.contains("[possible values: table, json, prometheus]"),
        "{entry}"
    );

    // Refused before anything else happens (no config, no AWS), naming the
    // command and what it does print.
    for words in [
        &["snapshot", "list"][..],
        &["volume", "list"],
        &["config", "show"],
        &["plan"],
        &["repo", "list", "/nonexistent-repo"],
    ] {
        let out = bed
            .bare_cmd()
            .args(words)
            .args(["-o", "prometheus"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{words:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{words:?}");
        let name = format!("`autosnap {}`", words[..words.len().min(2)].join(" "));
        let name = if words[0] == "plan" {
            "`autosnap plan`".to_string()
        } else {
            name
        };
        assert!(stderr.contains(&name), "{words:?}: {stderr}");
        assert!(
            stderr.contains("-o table or -o json"),
            "{words:?}: {stderr}"
        );
        assert!(stderr.contains("`autosnap status`"), "{words:?}: {stderr}");
    }
    // `status` takes it: whatever stops it here, it is not the format.
    let out = bed
        .bare_cmd()
        .args(["status", "-o", "prometheus"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not -o prometheus"), "{stderr}");
    assert!(!stderr.contains("invalid value"), "{stderr}");

    let entry = output_entry(&help(&bed, &["completions"], "-h"));
    assert!(entry.contains("[possible values: table]"), "{entry}");
    // A shell script and a man page have no JSON form.
    for words in [&["completions", "bash"][..], &["man"]] {
        let out = bed
            .bare_cmd()
            .args(words)
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{words:?}");
        assert!(out.stdout.is_empty(), "{words:?}");
    }
}

/// What each -v level shows (as `-v`'s help and the README say): -v adds
/// autosnap's debug lines (here: a hook's output, logged by the freeze
/// crate), -vv its trace lines with their targets, -vvv the AWS SDK's.
#[test]
fn verbose_levels_show_what_the_help_says() {
    let bed = TestBed::start();
    let (instance, volume) = bed.instance("app");
    let imds = FakeImds::start(&instance, REGION);
    // The hook runs around the snapshot of the mount holding this directory
    // (no freeze: that needs root and a filesystem of its own).
    let dir = bed.home.path();
    let mount = Command::new("stat")
        .args(["-c", "%m"])
        .arg(dir)
        .output()
        .expect("stat");
    let mount = String::from_utf8(mount.stdout).unwrap().trim().to_string();
    assert!(
        mount.starts_with('/'),
        "mount point of {}: {mount:?}",
        dir.display()
    );
    let run = |verbosity: Option<&str>| {
        let mut cmd = bed.std_cmd();
        cmd.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
            .args(["snapshot", "create"])
            .arg(dir)
            .arg("--volume")
            .arg(format!("{mount}={volume}"))
            .args(["--pre", "echo hook-said-h3llo", "--no-progress"]);
        if let Some(v) = verbosity {
            cmd.arg(v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{verbosity:?}: {stderr}");
        stderr
    };

    let default = run(None);
    assert!(default.contains("pre hook 1 succeeded"), "info: {default}");
    assert!(
        !default.contains("hook-said-h3llo"),
        "no debug at the default level: {default}"
    );

    let v = run(Some("-v"));
    assert!(
        v.contains("hook-said-h3llo"),
        "-v shows the freeze crate's debug lines: {v}"
    );
    assert!(!v.contains("autosnap_freeze::"), "-v shows no targets: {v}");
    assert!(
        !v.contains("aws_smithy"),
        "-v shows nothing of the SDK: {v}"
    );

    let vv = run(Some("-vv"));
    assert!(vv.contains("autosnap_freeze::"), "-vv shows targets: {vv}");
    assert!(
        !vv.contains("TRACE aws_smithy"),
        "-vv keeps the SDK at info: {vv}"
    );

    let vvv = run(Some("-vvv"));
    assert!(
        vvv.contains("TRACE aws_smithy"),
        "-vvv shows the SDK's trace: {}",
        &vvv[..vvv.len().min(4000)]
    );
}
