"""The `podium` command, one module per noun.

main.py   root group, error handling, `dev`, `server`, `agent`
job.py    run | plan | status | stop | history | validate
alloc.py  status | logs | stop | restart | exec
node.py   status | eligibility
output.py tables, JSON, durations for people
"""
