"""Small shared helpers: the clock seam, ids, backoff, logging setup.

Nothing here knows about kinds or the store; every other package may use it.
"""
