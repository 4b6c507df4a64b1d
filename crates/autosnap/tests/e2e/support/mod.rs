//! The test bed for end-to-end tests: each test starts its own emulator
//! (moto, through testbed/autosnap_testbed.py) on a free loopback port, so
//! tests are isolated and run in parallel, and runs the real `autosnap`
//! binary against it with a scrubbed environment.

pub mod imds;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command as StdCommand, Stdio};

use assert_cmd::Command;
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// This package's directory, as cargo says when it runs the test: the path compiled in may
/// name another checkout that built into the same (shared) target directory.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn repo_root() -> PathBuf {
    manifest_dir()
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The test bed's Python: `$AUTOSNAP_TESTBED_VENV/bin/python` or the
/// project-local venv that testbed/setup.sh creates.
fn testbed_python() -> PathBuf {
    let venv = std::env::var_os("AUTOSNAP_TESTBED_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".testbed/venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the test bed is not installed at {}: run testbed/setup.sh (the README's test command does)",
        venv.display()
    );
    py
}

/// One emulator process; stopped when dropped (and, because it watches its
/// stdin, also when the test process dies).
pub struct TestBed {
    child: Option<(Child, ChildStdin)>,
    pub port: u16,
    pub home: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl TestBed {
    pub fn start() -> TestBed {
        let script = repo_root().join("testbed/autosnap_testbed.py");
        let mut child = StdCommand::new(testbed_python())
            .arg(&script)
            .args(["--port", "0", "--exit-on-stdin-close"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the test bed");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut port = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read test bed output");
            if let Some(p) = line.trim().strip_prefix("AUTOSNAP_TESTBED_PORT=") {
                port = Some(p.parse().expect("port number"));
                break;
            }
        }
        let port = port.expect("the test bed printed no AUTOSNAP_TESTBED_PORT line");
        let home = tempfile::tempdir().expect("temp home");
        // Empty shared AWS files: the SDK finds nothing in them and stays quiet.
        std::fs::write(home.path().join("aws-config"), "").expect("aws config");
        std::fs::write(home.path().join("aws-credentials"), "").expect("aws credentials");
        TestBed {
            child: Some((child, stdin)),
            port,
            home,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// A sandbox without an emulator, for commands that never call AWS.
    pub fn offline() -> TestBed {
        let home = tempfile::tempdir().expect("temp home");
        std::fs::write(home.path().join("aws-config"), "").expect("aws config");
        std::fs::write(home.path().join("aws-credentials"), "").expect("aws credentials");
        TestBed {
            child: None,
            port: closed_port(),
            home,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The autosnap binary with an environment that points only at this
    /// test bed: fake keys, no shared AWS files, no instance metadata, a
    /// private HOME and working directory.
    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same as `cmd`, as a `std::process::Command` (for spawning).
    pub fn std_cmd(&self) -> StdCommand {
        let mut cmd = self.bare_std_cmd();
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL", self.endpoint());
        cmd
    }

    /// The binary with no credentials, region or endpoint at all.
    pub fn bare_cmd(&self) -> Command {
        Command::from_std(self.bare_std_cmd())
    }

    fn bare_std_cmd(&self) -> StdCommand {
        let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("autosnap"));
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("AUTOSNAP_") {
                cmd.env_remove(k);
            }
        }
        let home = self.home.path();
        cmd.current_dir(home)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("AWS_CONFIG_FILE", home.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join("aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs autosnap with `-o json` and parses standard output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self
            .cmd()
            .args(args)
            .args(["-o", "json"])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "autosnap {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "autosnap {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(region.to_string()))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Creates a volume with tags; returns its id.
    pub fn volume(&self, size: i32, tags: &[(&str, &str)]) -> String {
        let ec2 = self.ec2(REGION);
        self.block(async {
            let mut req = ec2
                .create_volume()
                .size(size)
                .availability_zone("us-east-1a");
            if !tags.is_empty() {
                req = req.tag_specifications(tag_spec(ResourceType::Volume, tags));
            }
            req.send()
                .await
                .expect("create volume")
                .volume_id
                .expect("id")
        })
    }

    /// A plain volume in another region.
    pub fn volume_in(&self, region: &str, size: i32) -> String {
        let ec2 = self.ec2(region);
        let az = format!("{region}a");
        self.block(async {
            ec2.create_volume()
                .size(size)
                .availability_zone(az)
                .send()
                .await
                .expect("create volume")
                .volume_id
                .expect("id")
        })
    }

    /// Starts an instance with one extra data volume; returns
    /// (instance id, data volume id).
    pub fn instance(&self, name: &str) -> (String, String) {
        let ec2 = self.ec2(REGION);
        self.block(async {
            let out = ec2
                .run_instances()
                .image_id("ami-12345678")
                .min_count(1)
                .max_count(1)
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .placement(
                    aws_sdk_ec2::types::Placement::builder()
                        .availability_zone("us-east-1a")
                        .build(),
                )
                .block_device_mappings(
                    aws_sdk_ec2::types::BlockDeviceMapping::builder()
                        .device_name("/dev/sdf")
                        .ebs(
                            aws_sdk_ec2::types::EbsBlockDevice::builder()
                                .volume_size(4)
                                .build(),
                        )
                        .build(),
                )
                .tag_specifications(tag_spec(ResourceType::Instance, &[("Name", name)]))
                .send()
                .await
                .expect("run instance");
            let inst = &out.instances()[0];
            let vol = inst.block_device_mappings()[0]
                .ebs()
                .and_then(|e| e.volume_id())
                .expect("volume")
                .to_string();
            (inst.instance_id().expect("id").to_string(), vol)
        })
    }

    /// A snapshot made behind autosnap's back (not managed).
    pub fn foreign_snapshot(&self, volume_id: &str) -> String {
        let ec2 = self.ec2(REGION);
        self.block(async {
            ec2.create_snapshot()
                .volume_id(volume_id)
                .send()
                .await
                .expect("create snapshot")
                .snapshot_id
                .expect("id")
        })
    }

    /// A snapshot with the given tags (the test bed's `autosnap-testbed:*`
    /// tags set its start time, state, or make it fail).
    pub fn snapshot_with_tags(
        &self,
        region: &str,
        volume_id: &str,
        tags: &[(&str, &str)],
    ) -> String {
        let ec2 = self.ec2(region);
        self.block(async {
            ec2.create_snapshot()
                .volume_id(volume_id)
                .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
                .send()
                .await
                .expect("create snapshot")
                .snapshot_id
                .expect("id")
        })
    }

    /// A backup of `volume` by policy `policy` in [`REGION`], `days` old (the test bed's
    /// start-time tag), with `extra` tags.
    pub fn policy_backup(
        &self,
        policy: &str,
        volume: &str,
        days: i64,
        extra: &[(&str, &str)],
    ) -> String {
        let start = (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let mut tags = vec![
            ("autosnap:managed", "true"),
            ("autosnap:policy", policy),
            ("autosnap:source-volume", volume),
            ("autosnap-testbed:start-time", start.as_str()),
        ];
        tags.extend_from_slice(extra);
        self.snapshot_with_tags(REGION, volume, &tags)
    }

    /// Registers an AMI that uses the given snapshot.
    pub fn image_using(&self, snapshot_id: &str) -> String {
        let ec2 = self.ec2(REGION);
        self.block(async {
            ec2.register_image()
                .name(format!("test-image-{snapshot_id}"))
                .root_device_name("/dev/xvda")
                .block_device_mappings(
                    aws_sdk_ec2::types::BlockDeviceMapping::builder()
                        .device_name("/dev/xvda")
                        .ebs(
                            aws_sdk_ec2::types::EbsBlockDevice::builder()
                                .snapshot_id(snapshot_id)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .expect("register image")
                .image_id
                .expect("id")
        })
    }

    pub fn snapshot_exists(&self, region: &str, snapshot_id: &str) -> bool {
        let ec2 = self.ec2(region);
        self.block(async {
            ec2.describe_snapshots()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("snapshot-id")
                        .values(snapshot_id)
                        .build(),
                )
                .send()
                .await
                .expect("describe")
                .snapshots()
                .iter()
                .any(|s| s.snapshot_id() == Some(snapshot_id))
        })
    }

    /// Writes a config file into the test's home and returns its path.
    pub fn write_config(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.home.path().join(name);
        std::fs::write(&p, text).expect("write config");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if let Some((child, _stdin)) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestBed {
    /// The snapshots `account` owns in `region` that carry `autosnap:policy=daily` (the test
    /// bed's `x-moto-account-id` header picks the account).
    pub fn daily_snapshots_in(
        &self,
        account: &str,
        region: &str,
    ) -> Vec<aws_sdk_ec2::types::Snapshot> {
        let ec2 = self.ec2(region);
        let header = account.to_string();
        let owner = account.to_string();
        self.block(async move {
            ec2.describe_snapshots()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:autosnap:policy")
                        .values("daily")
                        .build(),
                )
                .customize()
                .mutate_request(move |r| {
                    r.headers_mut().insert("x-moto-account-id", header.clone());
                })
                .send()
                .await
                .expect("describe snapshots")
                .snapshots()
                .iter()
                .filter(|s| s.owner_id() == Some(owner.as_str()))
                .cloned()
                .collect()
        })
    }

    /// An IAM role `name` in `account` whose trust policy lets `trusted` (an account id) assume
    /// it, as an administrator of that account would make it. A raw query-API request: the
    /// test bed does not check signatures, only reads the service from the scope.
    pub fn create_role_trusting(&self, account: &str, name: &str, trusted: &str) {
        self.create_role_with_trust(
            account,
            name,
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{trusted}:root"}},"Action":"sts:AssumeRole"}}]}}"#
            ),
        );
    }

    /// An IAM role `name` in `account` with the trust policy `trust` (JSON).
    pub fn create_role_with_trust(&self, account: &str, name: &str, trust: &str) {
        use std::io::{Read, Write};
        let body = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={name}&AssumeRolePolicyDocument={}",
            form_encode(trust)
        );
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            tcp,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
             x-moto-account-id: {account}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "CreateRole in {account}: {answer}"
        );
    }

    /// How many requests of each `(service, action)` the test bed answered so far (its
    /// observation endpoint, testbed/call_counter.py).
    pub fn calls(&self) -> std::collections::BTreeMap<(String, String), u64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            "GET /_autosnap_testbed/calls HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let body = text.split("\r\n\r\n").nth(1).expect("body");
        let rows: serde_json::Value = serde_json::from_str(body).expect("json");
        rows.as_array()
            .expect("rows")
            .iter()
            .map(|r| {
                (
                    (
                        r["service"].as_str().unwrap().to_string(),
                        r["action"].as_str().unwrap().to_string(),
                    ),
                    r["count"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// `application/x-www-form-urlencoded` encoding of a value.
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn tag_spec(kind: ResourceType, tags: &[(&str, &str)]) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                .collect(),
        ))
        .build()
}

/// A loopback port where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

// ---- AMI backups: S3, KMS, instances with a root volume, AMI users ----------

impl TestBed {
    /// An S3 client for the test bed (path-style addressing, as emulators need).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates an S3 bucket.
    pub fn bucket(&self, name: &str) {
        let s3 = self.s3();
        self.block(async {
            s3.create_bucket()
                .bucket(name)
                .send()
                .await
                .expect("create bucket");
        })
    }

    /// Reads an S3 object whole.
    pub fn s3_get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let s3 = self.s3();
        self.block(async {
            s3.get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"))
                .body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec()
        })
    }

    /// The server-side encryption S3 reports for an object.
    pub fn s3_sse(&self, bucket: &str, key: &str) -> Option<String> {
        let s3 = self.s3();
        self.block(async {
            s3.head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .expect("head object")
                .server_side_encryption()
                .map(|s| s.as_str().to_string())
        })
    }

    /// A KMS client for the test bed.
    pub fn kms(&self) -> aws_sdk_kms::Client {
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }

    /// A KMS key, with `alias` when given; returns its ARN.
    pub fn kms_key(&self, alias: Option<&str>) -> String {
        let kms = self.kms();
        self.block(async {
            let meta = kms
                .create_key()
                .send()
                .await
                .expect("create key")
                .key_metadata
                .expect("metadata");
            if let Some(a) = alias {
                kms.create_alias()
                    .alias_name(a)
                    .target_key_id(meta.key_id())
                    .send()
                    .await
                    .expect("alias");
            }
            meta.arn.expect("arn")
        })
    }

    /// An instance with a root volume (/dev/sda1, 8 GiB) and a data volume
    /// (/dev/sdf, 4 GiB gp3), tagged Name=`name` plus `tags`; returns its id.
    pub fn instance_with_root(&self, name: &str, tags: &[(&str, &str)]) -> String {
        use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, InstanceType};
        let ec2 = self.ec2(REGION);
        let mut all = vec![("Name", name)];
        all.extend_from_slice(tags);
        self.block(async {
            let dev = |name: &str, size: i32, kind: &str| {
                BlockDeviceMapping::builder()
                    .device_name(name)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(size)
                            .volume_type(kind.into())
                            .build(),
                    )
                    .build()
            };
            let out = ec2
                .run_instances()
                .image_id("ami-12345678")
                .min_count(1)
                .max_count(1)
                .instance_type(InstanceType::T3Micro)
                .block_device_mappings(dev("/dev/sda1", 8, "gp2"))
                .block_device_mappings(dev("/dev/sdf", 4, "gp3"))
                .tag_specifications(tag_spec(ResourceType::Instance, &all))
                .send()
                .await
                .expect("run instance");
            out.instances()[0].instance_id().expect("id").to_string()
        })
    }

    /// Launches an instance from an AMI (which then counts as in use).
    pub fn launch_from_image(&self, image_id: &str) -> String {
        let ec2 = self.ec2(REGION);
        self.block(async {
            let out = ec2
                .run_instances()
                .image_id(image_id)
                .min_count(1)
                .max_count(1)
                .send()
                .await
                .expect("run instance");
            out.instances()[0].instance_id().expect("id").to_string()
        })
    }

    /// A launch template whose (default and latest) version uses the AMI.
    pub fn launch_template_using(&self, name: &str, image_id: &str) -> String {
        let ec2 = self.ec2(REGION);
        self.block(async {
            ec2.create_launch_template()
                .launch_template_name(name)
                .launch_template_data(
                    aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                        .image_id(image_id)
                        .build(),
                )
                .send()
                .await
                .expect("create launch template")
                .launch_template()
                .and_then(|t| t.launch_template_id())
                .expect("id")
                .to_string()
        })
    }

    /// The AMI as EC2 describes it, or None once deregistered.
    pub fn image(&self, image_id: &str) -> Option<aws_sdk_ec2::types::Image> {
        let ec2 = self.ec2(REGION);
        self.block(async {
            ec2.describe_images()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("image-id")
                        .values(image_id)
                        .build(),
                )
                .send()
                .await
                .expect("describe images")
                .images()
                .first()
                .cloned()
        })
    }

    /// A snapshot as EC2 describes it.
    pub fn snapshot(&self, snapshot_id: &str) -> aws_sdk_ec2::types::Snapshot {
        let ec2 = self.ec2(REGION);
        self.block(async {
            ec2.describe_snapshots()
                .snapshot_ids(snapshot_id)
                .send()
                .await
                .expect("describe snapshots")
                .snapshots()
                .first()
                .cloned()
                .expect("snapshot")
        })
    }
}

/// A Recycle Bin client for the test bed (rules are created with it; autosnap only reads them).
pub fn rbin(bed: &TestBed) -> aws_sdk_rbin::Client {
    let conf = aws_sdk_rbin::Config::builder()
        .behavior_version(aws_sdk_rbin::config::BehaviorVersion::latest())
        .region(aws_sdk_rbin::config::Region::new(REGION))
        .endpoint_url(bed.endpoint())
        .credentials_provider(aws_sdk_rbin::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_rbin::Client::from_conf(conf)
}

pub fn rbin_tag(key: &str, value: &str) -> aws_sdk_rbin::types::ResourceTag {
    aws_sdk_rbin::types::ResourceTag::builder()
        .resource_tag_key(key)
        .resource_tag_value(value)
        .build()
        .expect("tag")
}

/// Creates a retention rule; returns its id.
pub fn rbin_rule(
    bed: &TestBed,
    kind: aws_sdk_rbin::types::ResourceType,
    days: i32,
    tags: &[(&str, &str)],
    exclude: &[(&str, &str)],
) -> String {
    let client = rbin(bed);
    let period = aws_sdk_rbin::types::RetentionPeriod::builder()
        .retention_period_value(days)
        .retention_period_unit(aws_sdk_rbin::types::RetentionPeriodUnit::Days)
        .build()
        .expect("period");
    let mut req = client
        .create_rule()
        .resource_type(kind)
        .retention_period(period);
    for (k, v) in tags {
        req = req.resource_tags(rbin_tag(k, v));
    }
    for (k, v) in exclude {
        req = req.exclude_resource_tags(rbin_tag(k, v));
    }
    bed.block(async { req.send().await.expect("create rule") })
        .identifier()
        .expect("id")
        .to_string()
}
