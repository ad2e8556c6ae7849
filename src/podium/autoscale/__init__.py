"""Autoscaling, the pure part: what count a group should have, and why, in numbers.

    Reading per policy ──propose()──> Proposal: a count from HPA's maths (tolerance,
                                      missing copies count 0 % up / 100 % down)
    Series (the group's demand, bucketed) ──forecast()──> the highest demand within `lead`
    proposals + forecast + Window ──decide()──> Decision: the count to set (or keep), the
                                      reason with its numbers, what held a change back, and
                                      when the next change may come

No I/O and no clock: `server/controllers/autoscaler.py` gathers the figures (agents'
usage and proxy counters, a user's Prometheus), passes `now`, and writes what `decide`
says as a new job version with an event.
"""

from podium.autoscale.forecast import Series, forecast
from podium.autoscale.hpa import Decision, Proposal, Reading, Situation, Window, decide, propose

__all__ = [
    "Decision",
    "Proposal",
    "Reading",
    "Series",
    "Situation",
    "Window",
    "decide",
    "forecast",
    "propose",
]
