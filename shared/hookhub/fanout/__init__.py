"""Fan-out: every event to each matching subscriber, with retries, dead letters and isolation.

- `sender`: one attempt (a signed POST) → `AttemptResult`
- `policy`: what a result means → `Verdict` (+ delay)
- `attempts`: the one decision path, shared by both shapes: attempt, record, settle
- `dispatcher`: `hookhub run`'s trigger (a consumer per subscription)
- `trigger`: the Knative `fanout` function's trigger (a RabbitmqSource per subscription)
"""

from hookhub.fanout.attempts import Attempts, Held, Step, Target
from hookhub.fanout.policy import Decision, Verdict, decide
from hookhub.fanout.sender import AttemptResult, Sender, delivery_id

__all__ = [
    "AttemptResult",
    "Attempts",
    "Decision",
    "Held",
    "Sender",
    "Step",
    "Target",
    "Verdict",
    "decide",
    "delivery_id",
]
