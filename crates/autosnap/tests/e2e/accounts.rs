//! Policies across accounts through the real binary on the test bed: each account is reached
//! by assuming its role (the test bed gives an assumed role's credentials the role's account,
//! and refuses a role that does not exist: testbed/assume_role.py), backed up in that account,
//! reported per account; one account without its role fails alone (exit 3).

use crate::support::{TestBed, ACCOUNT, REGION};
use serde_json::Value;

const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";

const POLICY: &str = r#"
[[policy]]
name = "daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "1d"
retain = { last = 3 }
"#;

/// An `[[account]]` entry whose role is `autosnap` in that account.
fn entry(id: &str) -> String {
    format!("\n[[account]]\nid = \"{id}\"\nrole_arn = \"arn:aws:iam::{id}:role/autosnap\"\n")
}

fn config(bed: &TestBed, accounts: &[&str]) {
    let mut text = POLICY.to_string();
    for id in accounts {
        text.push_str(&entry(id));
    }
    bed.write_config("autosnap.toml", &text, 0o644);
}

/// IAM CreateRole in `account` (the test bed's `x-moto-account-id` header), trusting the base
/// credentials' account, as an administrator of that account would make it. A raw query-API
/// request: the test bed does not check signatures, only reads the service from the scope.
fn create_role(bed: &TestBed, account: &str, name: &str) {
    create_role_trusting(bed, account, name, ACCOUNT);
}

/// The same, trusting `trusted` instead of the base credentials' account.
fn create_role_trusting(bed: &TestBed, account: &str, name: &str, trusted: &str) {
    bed.create_role_trusting(account, name, trusted);
}

/// A volume tagged `Backup=daily` in `account`.
fn volume_in(bed: &TestBed, account: &str) -> String {
    let ec2 = bed.ec2(REGION);
    let account = account.to_string();
    bed.block(async move {
        ec2.create_volume()
            .size(1)
            .availability_zone("us-east-1a")
            .tag_specifications(crate::support::tag_spec(
                aws_sdk_ec2::types::ResourceType::Volume,
                &[("Backup", "daily")],
            ))
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await
            .expect("create volume")
            .volume_id
            .expect("id")
    })
}

/// The source volumes of the snapshots autosnap's policy made in `account`.
fn backed_up_volumes(bed: &TestBed, account: &str) -> Vec<String> {
    let mut vols: Vec<String> = bed
        .daily_snapshots_in(account, REGION)
        .iter()
        .filter_map(|s| s.volume_id().map(str::to_owned))
        .collect();
    vols.sort();
    vols
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn account<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["account_id"] == id)
        .unwrap_or_else(|| panic!("no account {id} in {doc}"))
}

/// The volumes a plan's policies target.
fn planned_targets(plan: &Value) -> Vec<String> {
    let mut t: Vec<String> = plan["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["target_id"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

#[test]
fn plan_and_run_cover_three_accounts_each_in_its_own_account() {
    let bed = TestBed::start();
    let vols: Vec<(&str, String)> = [A, B, C]
        .into_iter()
        .map(|id| {
            create_role(&bed, id, "autosnap");
            (id, volume_in(&bed, id))
        })
        .collect();
    // The base account's own tagged volume is not one of the configured accounts.
    let base = bed.volume(1, &[("Backup", "daily")]);
    config(&bed, &[A, B, C]);

    let plan = bed.json(&["plan"]);
    assert_eq!(plan["failed_accounts"], 0, "{plan}");
    for (id, vol) in &vols {
        let a = account(&plan, id);
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(
            planned_targets(&a["plan"]),
            std::slice::from_ref(vol),
            "account {id}"
        );
        assert_eq!(a["summary"]["creates"], 1);
    }

    let run = bed.json(&["run"]);
    for (id, vol) in &vols {
        let a = account(&run, id);
        assert_eq!(a["report"]["created"].as_array().unwrap().len(), 1, "{a}");
        assert_eq!(
            backed_up_volumes(&bed, id),
            std::slice::from_ref(vol),
            "account {id} holds its own volume's snapshot and no other"
        );
    }
    assert!(
        backed_up_volumes(&bed, ACCOUNT).is_empty(),
        "{base} untouched"
    );

    // Table output: a heading per account, in the configured order.
    let out = bed.cmd().arg("plan").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (ia, ib, ic) = (
        text.find(&format!("== account {A} ==")).expect(&text),
        text.find(&format!("== account {B} ==")).expect(&text),
        text.find(&format!("== account {C} ==")).expect(&text),
    );
    assert!(ia < ib && ib < ic, "{text}");
    assert!(text.contains("accounts: 3 planned, 0 failed"), "{text}");
}

#[test]
fn an_account_whose_role_is_missing_is_reported_while_the_others_complete() {
    let bed = TestBed::start();
    for id in [A, B] {
        create_role(&bed, id, "autosnap");
    }
    let (va, vb, _vc) = (volume_in(&bed, A), volume_in(&bed, B), volume_in(&bed, C));
    config(&bed, &[A, B, C]);

    let out = bed.cmd().args(["run", "-o", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "partial failure");
    let doc = json_of(&out);
    assert_eq!(doc["failed_accounts"], 1);
    let c = account(&doc, C);
    assert_eq!(c["ok"], false);
    let error = c["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("cannot assume arn:aws:iam::{C}:role/autosnap"))
            && error.contains("AccessDenied")
            && error.contains("trust policy"),
        "{error}"
    );
    assert_eq!(backed_up_volumes(&bed, A), [va]);
    assert_eq!(backed_up_volumes(&bed, B), [vb]);
    assert!(backed_up_volumes(&bed, C).is_empty());

    // In a table the failed account says why under its heading, and the log names it too.
    let out = bed.cmd().arg("plan").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find(&format!("== account {C} ==")).expect(&text);
    assert!(
        text[at..].contains("failed: cannot assume"),
        "{}",
        &text[at..]
    );
    assert!(text.contains("accounts: 2 planned, 1 failed"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("account {C}")));
}

#[test]
fn status_prometheus_labels_every_sample_with_its_account() {
    let bed = TestBed::start();
    for id in [A, B] {
        create_role(&bed, id, "autosnap");
        volume_in(&bed, id);
    }
    config(&bed, &[A, B, C]);
    assert_eq!(
        bed.cmd().arg("run").output().unwrap().status.code(),
        Some(3)
    );

    let out = bed
        .cmd()
        .args(["status", "-o", "prometheus"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.contains("{account=\""), "unlabelled sample: {line}");
    }
    for id in [A, B] {
        assert!(
            text.contains(&format!(
                "autosnap_backups{{account=\"{id}\",policy=\"daily\""
            )),
            "{text}"
        );
        assert!(text.contains(&format!("autosnap_account_ok{{account=\"{id}\"}} 1")));
    }
    assert!(text.contains(&format!("autosnap_account_ok{{account=\"{C}\"}} 0")));
    // One HELP and one TYPE per metric, whatever the number of accounts.
    for family in [
        "autosnap_backups",
        "autosnap_target_state",
        "autosnap_status_ok",
    ] {
        assert_eq!(
            text.matches(&format!("# TYPE {family} ")).count(),
            1,
            "{text}"
        );
    }
    let json = bed.cmd().args(["status", "-o", "json"]).output().unwrap();
    let doc = json_of(&json);
    assert_eq!(doc["ok"], false, "an account could not be read");
    assert_eq!(account(&doc, A)["ok"], true);
    assert_eq!(account(&doc, A)["policies"][0]["policy"], "daily");
}

#[test]
fn account_flag_limits_a_run_to_the_accounts_named() {
    let bed = TestBed::start();
    for id in [A, B] {
        create_role(&bed, id, "autosnap");
    }
    let (va, _vb) = (volume_in(&bed, A), volume_in(&bed, B));
    config(&bed, &[A, B]);

    let run = bed.json(&["run", "--account", A]);
    assert_eq!(run["accounts"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(backed_up_volumes(&bed, A), [va]);
    assert!(backed_up_volumes(&bed, B).is_empty());

    let out = bed.cmd().args(["plan", "--account", C]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "--account {C}: no such account in the config (it has {A}, {B})"
        )),
        "{err}"
    );
}

#[test]
fn account_flag_without_accounts_and_invalid_entries_are_usage_errors() {
    let bed = TestBed::start();
    bed.write_config("autosnap.toml", POLICY, 0o644);
    let out = bed.cmd().args(["plan", "--account", A]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the config names no accounts"));

    let bad = format!(
        "{POLICY}\n[[account]]\nid = \"{A}\"\nrole_arn = \"arn:aws:iam::{B}:role/autosnap\"\n"
    );
    bed.write_config("autosnap.toml", &bad, 0o644);
    let out = bed.cmd().arg("plan").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("account \"{A}\": role_arn"))
            && err.contains(&format!("is a role in account {B}")),
        "{err}"
    );
}

#[test]
fn organization_accounts_are_discovered_active_members_only() {
    let bed = TestBed::start();
    let conf = aws_sdk_organizations::Config::builder()
        .behavior_version(aws_sdk_organizations::config::BehaviorVersion::latest())
        .region(aws_sdk_organizations::config::Region::new("us-east-1"))
        .endpoint_url(bed.endpoint())
        .credentials_provider(aws_sdk_organizations::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let org = aws_sdk_organizations::Client::from_conf(conf);
    let (active, closed) = bed.block(async {
        org.create_organization()
            .send()
            .await
            .expect("organization");
        let mut ids = Vec::new();
        for name in ["prod", "dev", "gone"] {
            let status = org
                .create_account()
                .account_name(name)
                .email(format!("{name}@example.com"))
                .send()
                .await
                .expect("create account");
            ids.push(
                status
                    .create_account_status()
                    .and_then(|s| s.account_id())
                    .expect("account id")
                    .to_string(),
            );
        }
        let closed = ids.pop().unwrap();
        org.close_account()
            .account_id(&closed)
            .send()
            .await
            .expect("close account");
        (ids, closed)
    });
    for id in &active {
        create_role(&bed, id, "autosnap");
        volume_in(&bed, id);
    }
    bed.write_config(
        "autosnap.toml",
        &format!("accounts = \"organization\"\norganization_role = \"autosnap\"\n{POLICY}"),
        0o644,
    );

    let plan = bed.json(&["plan"]);
    let mut listed: Vec<&str> = plan["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut want: Vec<&str> = active.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        listed, want,
        "not the management account {ACCOUNT}, not {closed}"
    );
    for id in &active {
        assert_eq!(account(&plan, id)["ok"], true, "{plan}");
        assert_eq!(account(&plan, id)["summary"]["creates"], 1);
    }
    assert!(plan["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "prod"));
}

#[test]
fn daemon_backs_up_each_account_and_logs_the_one_that_fails() {
    let bed = TestBed::start();
    for id in [A, B] {
        create_role(&bed, id, "autosnap");
    }
    let (va, vb) = (volume_in(&bed, A), volume_in(&bed, B));
    config(&bed, &[A, B, C]);
    let child = bed
        .std_cmd()
        .args(["daemon", "--max-sleep", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first round's backups in both reachable accounts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while backed_up_volumes(&bed, A).is_empty() || backed_up_volumes(&bed, B).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon made no backup"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("account {C}: cannot assume")),
        "the failing account is logged with its cause: {log}"
    );
    assert!(log.contains("daemon stopped"), "{log}");
    assert_eq!(backed_up_volumes(&bed, A), [va], "one backup per slot");
    assert_eq!(backed_up_volumes(&bed, B), [vb]);
}

/// A backup of policy `daily` taken `days` ago (the test bed's start-time tag) in `account`.
fn old_backup(bed: &TestBed, account: &str, volume: &str, days: i64) -> String {
    let start = (chrono::Utc::now() - chrono::Duration::days(days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ec2 = bed.ec2(REGION);
    let account = account.to_string();
    let volume = volume.to_string();
    bed.block(async move {
        ec2.create_snapshot()
            .volume_id(&volume)
            .tag_specifications(crate::support::tag_spec(
                aws_sdk_ec2::types::ResourceType::Snapshot,
                &[
                    ("autosnap:managed", "true"),
                    ("autosnap:policy", "daily"),
                    ("autosnap:source-volume", &volume),
                    ("autosnap-testbed:start-time", &start),
                ],
            ))
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await
            .expect("create snapshot")
            .snapshot_id
            .expect("id")
    })
}

#[test]
fn prune_asks_once_deletes_per_account_and_reports_the_failed_one() {
    let bed = TestBed::start();
    for id in [A, B] {
        create_role(&bed, id, "autosnap");
    }
    let (va, vb) = (volume_in(&bed, A), volume_in(&bed, B));
    // retain = { last = 3 }: A's oldest of four goes, B's two stay.
    let oldest = old_backup(&bed, A, &va, 4);
    for days in [3, 2, 1] {
        old_backup(&bed, A, &va, days);
    }
    for days in [2, 1] {
        old_backup(&bed, B, &vb, days);
    }
    config(&bed, &[A, B, C]);

    let dry = bed
        .cmd()
        .args(["prune", "--dry-run", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(3));
    let doc = json_of(&dry);
    assert_eq!(account(&doc, A)["summary"]["deletions"], 1, "{doc}");
    assert_eq!(account(&doc, B)["summary"]["deletions"], 0);
    assert!(
        snapshot_exists_in(&bed, A, &oldest),
        "a dry run deletes nothing"
    );

    let out = bed
        .cmd()
        .args(["prune", "--yes", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "C failed, A and B pruned");
    let doc = json_of(&out);
    let deleted = &account(&doc, A)["report"]["deleted"];
    assert_eq!(deleted.as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(deleted[0]["backup_id"], oldest.as_str());
    assert_eq!(account(&doc, B)["report"]["deleted"], serde_json::json!([]));
    assert_eq!(account(&doc, C)["ok"], false);
    assert!(!snapshot_exists_in(&bed, A, &oldest));
    assert_eq!(backed_up_volumes(&bed, A).len(), 3);
    assert_eq!(backed_up_volumes(&bed, B).len(), 2);
}

/// Whether snapshot `id` exists in `account`.
fn snapshot_exists_in(bed: &TestBed, account: &str, id: &str) -> bool {
    let ec2 = bed.ec2(REGION);
    let account = account.to_string();
    let id = id.to_string();
    bed.block(async move {
        ec2.describe_snapshots()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("snapshot-id")
                    .values(&id)
                    .build(),
            )
            .customize()
            .mutate_request(move |r| {
                r.headers_mut().insert("x-moto-account-id", account.clone());
            })
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .iter()
            .any(|s| s.snapshot_id() == Some(id.as_str()))
    })
}

#[test]
fn member_roles_are_assumed_from_a_base_role_when_aws_role_arn_is_set() {
    let bed = TestBed::start();
    // The chain: keys (123456789012) → aws.role_arn in a hub account → each member's role, which
    // trusts only the hub: assuming it straight from the keys would be refused.
    const HUB: &str = "444444444444";
    create_role(&bed, HUB, "base");
    create_role_trusting(&bed, A, "autosnap", HUB);
    let va = volume_in(&bed, A);
    let text = format!(
        "[aws]\nrole_arn = \"arn:aws:iam::{HUB}:role/base\"\n{POLICY}{}",
        entry(A)
    );
    bed.write_config("autosnap.toml", &text, 0o644);
    bed.json(&["run"]);
    assert_eq!(backed_up_volumes(&bed, A), [va]);

    // Without the hub role the member role refuses the keys' account.
    bed.write_config("autosnap.toml", &format!("{POLICY}{}", entry(A)), 0o644);
    let out = bed.cmd().args(["plan", "-o", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the only account failed");
    let doc = json_of(&out);
    assert!(
        account(&doc, A)["error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{doc}"
    );
}

/// A role in `account` that trusts the base credentials' account only with `external_id`.
fn create_role_with_external_id(bed: &TestBed, account: &str, name: &str, external_id: &str) {
    bed.create_role_with_trust(
        account,
        name,
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole","Condition":{{"StringEquals":{{"sts:ExternalId":"{external_id}"}}}}}}]}}"#
        ),
    );
}

const BACKUP_ACCOUNT: &str = "444444444444";

/// Three backed-up accounts (C with an external id) and a backup account.
fn accounts_config(bed: &TestBed, external_id: &str) {
    let text = format!(
        "{POLICY}{}{}\n[[account]]\nid = \"{C}\"\nrole_arn = \"arn:aws:iam::{C}:role/autosnap\"\n\
         external_id = \"{external_id}\"\nregions = [\"us-east-1\"]\npolicies = [\"daily\"]\n\
         \n[[backup_account]]\nid = \"{BACKUP_ACCOUNT}\"\n\
         role_arn = \"arn:aws:iam::{BACKUP_ACCOUNT}:role/autosnap-backup\"\n",
        entry(A),
        entry(B)
    );
    bed.write_config("autosnap.toml", &text, 0o644);
}

#[test]
fn config_show_lists_the_accounts_without_their_external_ids() {
    let bed = TestBed::start();
    accounts_config(&bed, "s3cret-id");
    let doc = bed.json(&["config", "show"]);
    let listed: Vec<(&str, &str)> = doc["accounts"]["accounts"]
        .as_array()
        .unwrap_or_else(|| panic!("no accounts: {doc}"))
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            (A, "backed up"),
            (B, "backed up"),
            (C, "backed up"),
            (BACKUP_ACCOUNT, "backup")
        ]
    );
    let c = &doc["accounts"]["accounts"][2];
    assert_eq!(c["external_id"], "***");
    assert_eq!(c["regions"][0], "us-east-1");
    assert!(!doc.to_string().contains("s3cret-id"), "{doc}");

    let out = bed.cmd().args(["config", "show"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("accounts:"), "{text}");
    assert!(
        text.contains(&format!("arn:aws:iam::{C}:role/autosnap (external id ***)")),
        "{text}"
    );
    assert!(!text.contains("s3cret-id"));

    // An organization: the role assumed in each member.
    bed.write_config(
        "autosnap.toml",
        &format!("accounts = \"organization\"\norganization_role = \"ops/autosnap\"\n{POLICY}"),
        0o644,
    );
    let doc = bed.json(&["config", "show"]);
    assert_eq!(doc["accounts"]["discovery"], "organization");
    assert_eq!(doc["accounts"]["organization_role"], "ops/autosnap");
}

#[test]
fn config_check_assumes_each_role_and_says_why_one_fails() {
    let bed = TestBed::start();
    create_role(&bed, A, "autosnap");
    // B has no role; C's asks for another external id; the backup account's role is there.
    create_role_with_external_id(&bed, C, "autosnap", "right-id");
    create_role(&bed, BACKUP_ACCOUNT, "autosnap-backup");
    accounts_config(&bed, "wrong-id");

    let out = bed
        .cmd()
        .args(["config", "check", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "some accounts fail");
    let doc = json_of(&out);
    let role = |id: &str| {
        doc.as_array()
            .unwrap()
            .iter()
            .find(|c| c["account_id"] == id)
            .unwrap_or_else(|| panic!("no check of {id}: {doc}"))
            .clone()
    };
    assert_eq!(role(A)["ok"], true, "{doc}");
    assert_eq!(role(A)["check"], "account role");
    let b = role(B);
    assert_eq!(b["ok"], false);
    let detail = b["detail"].as_str().unwrap();
    assert!(
        detail.contains("AccessDenied") && detail.contains("the role is missing"),
        "{detail}"
    );
    let c = role(C);
    assert_eq!(c["ok"], false);
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("the external id is wrong"),
        "{c}"
    );
    let backup = role(BACKUP_ACCOUNT);
    assert_eq!(backup["ok"], true, "{backup}");
    assert_eq!(backup["check"], "backup account role");

    // Every role fixed: all ok, exit 0.
    create_role(&bed, B, "autosnap");
    accounts_config(&bed, "right-id");
    let out = bed.cmd().args(["config", "check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(text.matches("account role").count(), 4, "{text}");
}
