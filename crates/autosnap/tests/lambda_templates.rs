//! The Lambda deployment templates (contrib/lambda/): both pass cfn-lint (installed into the
//! test bed's venv by testbed/setup.sh, pinned), the roles they deploy allow exactly what
//! `autosnap iam-policy` prints for the same use, and each schedule's event is the one the
//! function's contract names.

use std::path::PathBuf;
use std::process::Command;

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

/// The function's own account and every member account get exactly the statements of
/// `iam-policy --for backup --for prune` (what `run` needs: it creates, copies and prunes).
#[test]
fn the_backup_roles_allow_exactly_what_iam_policy_prints() {
    let printed = iam_policy(&["backup", "prune"]);
    let expected = &printed["Statement"];
    assert!(!actions(expected).is_empty());

    let hub = decode("template.yaml");
    let backup = at(&hub, &["Resources", "BackupPolicy"]);
    assert_eq!(backup["Condition"], "BacksUpOwnAccount");
    assert_eq!(
        at(backup, &["Properties", "RoleName"]),
        &json!({"Ref": "FunctionRole"})
    );
    let hub_statements = at(backup, &["Properties", "PolicyDocument", "Statement"]);
    assert_eq!(
        actions(hub_statements),
        actions(expected),
        "template.yaml's BackupPolicy allows other actions than iam-policy prints: {}",
        sync_hint()
    );
    assert_eq!(hub_statements, expected, "{}", sync_hint());

    let member = decode("member-role.yaml");
    let policies = at(&member, &["Resources", "Role", "Properties", "Policies"]);
    assert_eq!(policies.as_array().map(Vec::len), Some(1));
    let member_statements = at(policies, &["0", "PolicyDocument", "Statement"]);
    assert_eq!(
        actions(member_statements),
        actions(expected),
        "member-role.yaml allows other actions than iam-policy prints: {}",
        sync_hint()
    );
    assert_eq!(member_statements, expected, "{}", sync_hint());
}

/// The function role's own statements: logs, reading the config, and the accounts (README,
/// "Many accounts": sts:AssumeRole on the member role, DescribeOrganization and ListAccounts
/// with `accounts = "organization"`). Nothing else, and no EC2 outside BackupPolicy.
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
