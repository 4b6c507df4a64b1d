//! The Lambda deployment templates (contrib/lambda/): both pass cfn-lint (installed into the
//! test bed's venv by testbed/setup.sh, pinned), the roles they deploy allow exactly what
//! `autosnap iam-policy` prints for the same use, and each schedule's event, given to the
//! function with the template's environment, runs that policy.

use std::path::PathBuf;
use std::process::Command;

use crate::support::TestBed;
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.join("../..").canonicalize().expect("repo root")
}

/// The test bed's venv (testbed/setup.sh), which also holds cfn-lint.
fn venv() -> PathBuf {
    let venv = std::env::var_os("AUTOSNAP_TESTBED_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".testbed/venv"));
    assert!(
        venv.join("bin/cfn-lint").exists(),
        "cfn-lint is not installed in {}: run testbed/setup.sh (the README's test command does)",
        venv.display()
    );
    venv
}

fn template_path(name: &str) -> PathBuf {
    repo_root().join("contrib/lambda").join(name)
}

/// The template as cfn-lint reads it (short-form tags such as `!Ref` become `{"Ref": …}`).
fn decode(name: &str) -> Value {
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import json, sys\nfrom cfnlint.decode import decode\n\
             t, errors = decode(sys.argv[1])\n\
             assert not errors, errors\n\
             print(json.dumps(t))",
        ])
        .arg(template_path(name))
        .output()
        .expect("run the test bed's python");
    assert!(
        out.status.success(),
        "decoding {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("decoded template is JSON")
}

fn iam_policy(features: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autosnap"));
    cmd.arg("iam-policy");
    for f in features {
        cmd.args(["--for", f]);
    }
    let out = cmd.output().expect("run autosnap iam-policy");
    assert!(out.status.success(), "autosnap iam-policy failed");
    serde_json::from_slice(&out.stdout).expect("iam-policy prints JSON")
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, key| match key.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[*key],
    })
}

/// Every action a list of statements allows, sorted (a statement's Action is a string or a list).
fn actions(statements: &Value) -> Vec<String> {
    let mut all: Vec<String> = statements
        .as_array()
        .expect("statements are a list")
        .iter()
        .flat_map(|s| match &s["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
            other => panic!("unexpected Action {other}"),
        })
        .collect();
    all.sort();
    all.dedup();
    all
}

fn sync_hint() -> &'static str {
    "run contrib/lambda/sync_iam_policy.py --autosnap <built autosnap> to write the policy into the templates"
}

#[test]
fn both_templates_pass_cfn_lint() {
    let out = Command::new(venv().join("bin/cfn-lint"))
        .arg(template_path("template.yaml"))
        .arg(template_path("member-role.yaml"))
        .output()
        .expect("run cfn-lint");
    assert!(
        out.status.success(),
        "cfn-lint found problems (exit {:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each role the templates deploy gets exactly the statements `autosnap iam-policy` prints for
/// its use: `--for backup --for prune` where `run` backs up (it creates, copies and prunes) — the
/// function's own account and every member account —, `--for share` where backups are copied
/// into a backup account, `--for backup-account` for the backup account's role.
#[test]
fn every_role_allows_exactly_what_iam_policy_prints_for_its_use() {
    let backup_prune = iam_policy(&["backup", "prune"]);
    let share = iam_policy(&["share"]);
    let backup_account = iam_policy(&["backup-account"]);
    for printed in [&backup_prune, &share, &backup_account] {
        assert!(!actions(&printed["Statement"]).is_empty());
    }

    let hub = decode("template.yaml");
    for (resource, condition, printed) in [
        ("BackupPolicy", "BacksUpOwnAccount", &backup_prune),
        ("SharePolicy", "SharesFromOwnAccount", &share),
    ] {
        let policy = at(&hub, &["Resources", resource]);
        assert_eq!(policy["Condition"], condition, "{resource}");
        assert_eq!(
            at(policy, &["Properties", "RoleName"]),
            &json!({"Ref": "FunctionRole"})
        );
        let statements = at(policy, &["Properties", "PolicyDocument", "Statement"]);
        assert_eq!(
            actions(statements),
            actions(&printed["Statement"]),
            "template.yaml's {resource} allows other actions than iam-policy prints: {}",
            sync_hint()
        );
        assert_eq!(
            statements,
            &printed["Statement"],
            "{resource}: {}",
            sync_hint()
        );
    }

    // member-role.yaml: each inline policy is {"Fn::If": [condition, policy, AWS::NoValue]}.
    let member = decode("member-role.yaml");
    let policies = at(&member, &["Resources", "Role", "Properties", "Policies"])
        .as_array()
        .expect("the role's policies");
    assert_eq!(policies.len(), 3);
    for (name, condition, printed) in [
        ("autosnap-backup-prune", "IsMember", &backup_prune),
        ("autosnap-share", "MemberShares", &share),
        (
            "autosnap-backup-account",
            "IsBackupAccount",
            &backup_account,
        ),
    ] {
        let branches = policies
            .iter()
            .map(|p| &p["Fn::If"])
            .find(|b| b[1]["PolicyName"] == name)
            .unwrap_or_else(|| panic!("member-role.yaml has no policy {name}"));
        assert_eq!(branches[0], condition, "{name}");
        assert_eq!(branches[2], json!({"Ref": "AWS::NoValue"}), "{name}");
        let statements = at(&branches[1], &["PolicyDocument", "Statement"]);
        assert_eq!(
            actions(statements),
            actions(&printed["Statement"]),
            "member-role.yaml's {name} allows other actions than iam-policy prints: {}",
            sync_hint()
        );
        assert_eq!(statements, &printed["Statement"], "{name}: {}", sync_hint());
    }
}

/// The function role's own statements: logs, reading the config, and the accounts (README,
/// "Many accounts": sts:AssumeRole on the member role and the backup account's role,
/// DescribeOrganization and ListAccounts with `accounts = "organization"`). Nothing else, and
/// no EC2 outside the iam-policy blocks.
#[test]
fn the_function_role_reads_its_config_and_assumes_only_the_member_role() {
    let hub = decode("template.yaml");
    let policies = at(
        &hub,
        &["Resources", "FunctionRole", "Properties", "Policies"],
    );
    let statements: Vec<Value> = at(policies, &["0", "PolicyDocument", "Statement"])
        .as_array()
        .expect("statements")
        .iter()
        // A conditional statement is {"Fn::If": [condition, statement, AWS::NoValue]}.
        .map(|s| match s.get("Fn::If") {
            Some(branches) => branches[1].clone(),
            None => s.clone(),
        })
        .collect();
    let by_sid = |sid: &str| -> Value {
        statements
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
            .clone()
    };
    assert_eq!(
        actions(&Value::Array(statements.clone())),
        [
            "kms:Decrypt",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "organizations:DescribeOrganization",
            "organizations:ListAccounts",
            "s3:GetObject",
            "ssm:GetParameter",
            "sts:AssumeRole",
        ]
    );
    assert_eq!(
        by_sid("AssumeMemberRoles")["Resource"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${MemberRoleName}"})
    );
    assert_eq!(
        by_sid("AssumeBackupAccountRole")["Resource"],
        json!({"Ref": "BackupAccountRoleArn"})
    );
    // kms:Decrypt only through SSM or S3 (the config), never directly.
    assert!(by_sid("DecryptConfig")["Condition"]["StringEquals"]["kms:ViaService"].is_array());
}

/// Each schedule sends `{"command":"run","policies":["<name>"]}`, the event the function's
/// contract defines (docs/lambda.md, "Events and results"), and the function gets its config
/// and deadline margin from the variables the contract names.
#[test]
fn each_schedule_runs_its_policy_and_the_function_follows_the_contract() {
    let hub = decode("template.yaml");
    let each = at(&hub, &["Resources", "Fn::ForEach::PolicySchedules"]);
    assert_eq!(each[0], "Name");
    assert_eq!(each[1], json!({"Ref": "PolicyNames"}));
    let schedule = &each[2]["Schedule&{Name}"];
    assert_eq!(schedule["Type"], "AWS::Scheduler::Schedule");
    let input = at(schedule, &["Properties", "Target", "Input", "Fn::Sub"])
        .as_str()
        .expect("Input is a Fn::Sub string");
    let event: Value = serde_json::from_str(&input.replace("${Name}", "prod-daily"))
        .expect("the schedule's input is JSON");
    assert_eq!(event, json!({"command": "run", "policies": ["prod-daily"]}));

    let function = at(&hub, &["Resources", "Function", "Properties"]);
    assert_eq!(function["Runtime"], "provided.al2023");
    assert_eq!(function["Timeout"], 900);
    assert_eq!(function["Architectures"], json!([{"Ref": "Architecture"}]));
    let allowed = at(&hub, &["Parameters", "Architecture", "AllowedValues"]);
    assert_eq!(allowed, &json!(["arm64", "x86_64"]));
    let mut vars: Vec<&str> = at(function, &["Environment", "Variables"])
        .as_object()
        .expect("variables")
        .keys()
        .map(String::as_str)
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [
            "AUTOSNAP_CONFIG",
            "AUTOSNAP_CONFIG_S3",
            "AUTOSNAP_CONFIG_SSM",
            "AUTOSNAP_DEADLINE_MARGIN"
        ]
    );
    // No retries by Lambda of an invocation that failed: the next check is the retry.
    assert_eq!(
        at(function, &["EventInvokeConfig", "MaximumRetryAttempts"]),
        0
    );
}

/// What the deployed function does with a schedule's event: the template's `Input` for one
/// policy, given to the function's handler (`autosnap lambda-invoke`, as the runtime loop calls
/// it) with the config in the template's `AUTOSNAP_CONFIG` variable and its default deadline
/// margin, backs up that policy's volumes and no other policy's.
#[test]
fn a_schedules_event_runs_its_policy_through_the_function() {
    let hub = decode("template.yaml");
    let input = at(
        &hub,
        &[
            "Resources",
            "Fn::ForEach::PolicySchedules",
            "2",
            "Schedule&{Name}",
            "Properties",
            "Target",
            "Input",
            "Fn::Sub",
        ],
    )
    .as_str()
    .expect("the schedule's Input")
    .replace("${Name}", "db-daily");
    let function = at(&hub, &["Resources", "Function", "Properties"]);
    let variables = at(function, &["Environment", "Variables"]);
    // The template sets AUTOSNAP_CONFIG from ConfigText and the margin from DeadlineMargin.
    assert_eq!(
        variables["AUTOSNAP_CONFIG"],
        json!({"Fn::If": ["HasTextConfig", {"Ref": "ConfigText"}, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(
        variables["AUTOSNAP_DEADLINE_MARGIN"],
        json!({"Ref": "DeadlineMargin"})
    );
    let margin = at(&hub, &["Parameters", "DeadlineMargin", "Default"])
        .as_str()
        .expect("DeadlineMargin's default");

    let bed = TestBed::start();
    let db = bed.volume(1, &[("Backup", "db")]);
    let web = bed.volume(1, &[("Backup", "web")]);
    let config = r#"
[[policy]]
name = "db-daily"
resource = "volume"
select = [{ tags = { Backup = "db" } }]
schedule = "1d"
retain = { last = 3 }

[[policy]]
name = "web-daily"
resource = "volume"
select = [{ tags = { Backup = "web" } }]
schedule = "1d"
retain = { last = 3 }
"#;
    let event = bed.home.path().join("event.json");
    std::fs::write(&event, &input).unwrap();
    let out = bed
        .cmd()
        .arg("lambda-invoke")
        .arg("--event")
        .arg(&event)
        .env("AUTOSNAP_CONFIG", config)
        .env("AUTOSNAP_DEADLINE_MARGIN", margin)
        .output()
        .expect("run lambda-invoke");
    let response: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON response ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{response}");
    assert_eq!(response["command"], "run");
    assert_eq!(response["exit_code"], 0);
    assert_eq!(response["complete"], true);

    let backed_up = |volume: &str| -> usize {
        bed.json(&["snapshot", "list", "--volume", volume])
            .as_array()
            .expect("snapshot list")
            .len()
    };
    assert_eq!(backed_up(&db), 1, "db-daily's volume: {response}");
    assert_eq!(
        backed_up(&web),
        0,
        "web-daily was not in the event: {response}"
    );
}
