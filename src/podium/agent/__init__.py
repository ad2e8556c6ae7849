"""The node agent: it owns its node.

fingerprint -> register -> heartbeat loop
watch own allocs (blocking query) -> AllocRunner per alloc
    -> TaskRunner per task -> driver (start, wait, stop, recover) + restart policy
    -> health checks (http, tcp, command)
reporter: batched alloc status -> server
local state file: task handles, so a restarted agent re-adopts its tasks
agent HTTP (logs, exec) for the CLI
"""
