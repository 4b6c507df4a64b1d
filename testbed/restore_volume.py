"""A test control for restore tests: hold the volumes made from a snapshot in a state.

moto makes every volume `available` at once, so a test cannot catch autosnap while it waits for
a restore-test volume (and kill it there) unless the volume stays `creating`. autosnap creates
that volume itself, with its own tags, so the control sits on the snapshot instead.
Applied by autosnap_testbed.py after ec2_corrections.py (whose volume-state control it uses).
"""

from typing import Any

CORRECTIONS = {
    "volume-state-from-snapshot": (
        "TEST-BED ONLY, not AWS behaviour: the tag autosnap-testbed:volume-state=<state> on a "
        "snapshot puts every volume CreateVolume makes from it in that state (e.g. creating) "
        "until the volume's own autosnap-testbed:state tag changes it; AWS's volumes go from "
        "creating to available on their own"
    ),
}

VOLUME_STATE_TAG = "autosnap-testbed:volume-state"

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _applied = True

    from moto.ec2.models.elastic_block_store import EBSBackend

    inner_create_volume = EBSBackend.create_volume

    def create_volume(self: Any, *args: Any, **kwargs: Any) -> Any:
        volume = inner_create_volume(self, *args, **kwargs)
        snapshot_id = kwargs.get("snapshot_id")
        if snapshot_id is None and len(args) >= 3:
            snapshot_id = args[2]
        if snapshot_id:
            state = getattr(self, "tags", {}).get(snapshot_id, {}).get(VOLUME_STATE_TAG)
            if state:
                # Read by ec2_corrections' Volume.status.
                volume._autosnap_state = state
        return volume

    EBSBackend.create_volume = create_volume
