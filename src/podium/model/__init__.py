"""The resource kinds (types.py) and job files (spec.py): parse, canonicalize, validate.

YAML/JSON text -> spec.parse_job_text -> dict -> canonicalize (defaults, one place)
               -> validate (every problem, with its path) -> types.Job
"""
