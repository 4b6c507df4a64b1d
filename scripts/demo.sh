#!/usr/bin/env bash
# The demo: autosnap's main job against the local test bed (an AWS emulator
# on 127.0.0.1; nothing reaches AWS). Installs the test bed if missing, builds
# autosnap, seeds tagged volumes and an instance, then snapshots, lists,
# copies across regions with a KMS key, deletes safely and restores a volume.
#
#   scripts/demo.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/autosnap/target}"

echo "==> installing the test bed (once) and building autosnap"
venv_line="$(testbed/setup.sh)"
venv="${venv_line#AUTOSNAP_TESTBED_VENV=}"
cargo build --quiet --bin autosnap
autosnap_bin="$CARGO_TARGET_DIR/debug/autosnap"

work="$(mktemp -d "${TMPDIR:-/tmp}/autosnap-demo.XXXXXX")"
"$venv/bin/python" testbed/autosnap_testbed.py --port 0 --port-file "$work/port" \
    >"$work/testbed.log" 2>&1 &
testbed_pid=$!
cleanup() { kill "$testbed_pid" 2>/dev/null || true; wait "$testbed_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
[[ -s "$work/port" ]] || { echo "the test bed did not start:"; cat "$work/testbed.log"; exit 1; }
endpoint="http://127.0.0.1:$(cat "$work/port")"

# Only the test bed: fake keys, a private config location, no instance metadata.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="$endpoint" AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"
touch "$AWS_CONFIG_FILE" "$AWS_SHARED_CREDENTIALS_FILE"
export AUTOSNAP_CONFIG="$work/autosnap.toml"
unset AWS_PROFILE

echo "==> test bed at $endpoint; seeding volumes and an instance"
seed="$("$venv/bin/python" - "$endpoint" <<'PY'
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
def vol(size, **tags):
    spec = [{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.create_volume(Size=size, AvailabilityZone="us-east-1a", VolumeType="gp3",
                             TagSpecifications=spec)["VolumeId"]
db = vol(20, Name="db-data", Env="prod", Backup="daily")
logs = vol(8, Name="logs", Env="prod", Backup="weekly")
vol(4, Name="scratch", Env="dev")
inst = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="t3.micro",
    Placement={"AvailabilityZone": "us-east-1a"},
    BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10}}],
    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}],
)["Instances"][0]["InstanceId"]
foreign = ec2.create_snapshot(VolumeId=logs, Description="made by hand")["SnapshotId"]
print(db, logs, inst, foreign)
PY
)"
read -r db logs inst foreign <<<"$seed"

run() { printf '\n$ autosnap %s\n' "$*"; "$autosnap_bin" "$@"; }
json_field() { "$venv/bin/python" -c "import json,sys; print(json.load(sys.stdin)$1)"; }

run init
run config check
run volume list
run snapshot create "$db" "$logs" --tag Purpose=demo --wait
run snapshot create "$inst" --wait
run snapshot list
db_snap="$("$autosnap_bin" snapshot list --volume "$db" -o json | json_field '[0]["snapshot_id"]')"
run snapshot copy "$db_snap" --to-region us-west-2 --kms-key alias/backup --wait
echo "# running the same copy again finds the existing copy:"
run snapshot copy "$db_snap" --to-region us-west-2
run snapshot list --region us-west-2
echo "# autosnap refuses to delete what it did not create:"
run snapshot delete "$db_snap" "$foreign" --dry-run || echo "(exit $?: partial, as planned)"
run volume create --snapshot "$db_snap" --availability-zone us-east-1b --tag Restored=demo --wait
run snapshot delete "$db_snap"
run volume list --tag Env=prod

echo
echo "==> backup policies: tag-selected volumes, a schedule, retention with reasons, a copy"
cat >>"$AUTOSNAP_CONFIG" <<'TOML'

[[policy]]
name = "prod-daily"
resource = "volume"
select = [{ tags = { Env = "prod" } }]
schedule = "0 3 * * *"
retain = { last = 2, daily = 7, weekly = 4 }
tags = { Team = "$(tag:Name)-owners", Source = "$(volume-id)" }
copy = [{ region = "us-west-2", kms_key = "alias/backup", retain = { last = 3 } }]

[[policy]]
name = "web-sets"
resource = "instance"
select = [{ tags = { Name = "web-1" } }]
schedule = "6h"
retain = { last = 4 }
TOML
echo "# the logs volume already has 20 days of daily backups from earlier runs:"
"$venv/bin/python" - "$endpoint" "$logs" <<'PY'
import sys, datetime, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
now = datetime.datetime.now(datetime.timezone.utc).replace(hour=3, minute=0, second=0, microsecond=0)
for day in range(1, 21):
    t = now - datetime.timedelta(days=day)
    ec2.create_snapshot(VolumeId=sys.argv[2], TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "autosnap:managed", "Value": "true"},
        {"Key": "autosnap:policy", "Value": "prod-daily"},
        {"Key": "autosnap:source-volume", "Value": sys.argv[2]},
        # test bed only: backdate the snapshot
        {"Key": "autosnap-testbed:start-time", "Value": t.strftime("%Y-%m-%dT%H:%M:%SZ")},
    ]}])
PY
run plan
run run
echo "# running again does nothing: every target's newest backup covers its schedule slot"
run run
run status || echo "(exit $?: status reports what is not covered)"
run prune --dry-run

echo
echo "==> AMI backups: an encrypted AMI of the instance, its metadata in S3, store and restore"
"$venv/bin/python" - "$endpoint" <<'PY'
import sys, boto3
from botocore.config import Config
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1")
boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **kw).create_bucket(Bucket="autosnap-amis")
kms = boto3.client("kms", **kw)
kms.create_alias(AliasName="alias/ami-backup", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
PY
run ami create "$inst" --encrypt --kms-key alias/ami-backup --metadata-bucket autosnap-amis --tag Purpose=demo
ami="$("$autosnap_bin" ami list --managed -o json | json_field '[0]["image_id"]')"
run ami list --managed
run ami store "$ami" --bucket autosnap-amis --poll-interval 1s
run ami restore --bucket autosnap-amis --ami "$ami" --name web-1-restored --poll-interval 1s
run ami delete "$ami" --dry-run
echo "# AMI backups on a schedule: an AMI policy, encrypted, copied to us-west-2, with retention"
cat >>"$AUTOSNAP_CONFIG" <<'TOML'

[[policy]]
name = "web-ami"
resource = "instance"
kind = "ami"
select = [{ tags = { Name = "web-1" } }]
schedule = "0 2 * * *"
retain = { daily = 7, weekly = 4 }
encrypt = true
kms_key = "alias/ami-backup"
copy = [{ region = "us-west-2", retain = { daily = 3 } }]
TOML
run plan --policy web-ami
run run --policy web-ami
run ami list --managed --tag autosnap:policy=web-ami
run iam-policy --for backup
echo
echo "demo finished: every result above came from the test bed at $endpoint"
