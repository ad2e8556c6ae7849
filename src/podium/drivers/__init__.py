"""Drivers run tasks: `process` (own session, cgroup limits), `mock` (tests).

Each implements `drivers.base.Driver`; `builtin_drivers()` returns the set an agent offers.
"""
