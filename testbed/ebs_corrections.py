"""Corrections to moto's EBS direct emulation (filled in below)."""


def apply() -> None:
    pass
