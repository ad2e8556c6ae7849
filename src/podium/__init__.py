"""podium: a workload orchestrator and cluster manager.

Data flows one way through the house:

    spec (model) -> api -> store -> controllers -> scheduler -> store -> agent -> driver
"""

__version__ = "0.1.0"
