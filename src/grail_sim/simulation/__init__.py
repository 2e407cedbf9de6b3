"""The simulate stage: the experiment run in silico (docs/simulate.md).

`slates` is the platform's slate rule per arm, `world` the videos, their stances and the seed
videos of each arm, `observed` the held-out participants' logged sessions, `predictors` the
viewers that choose (trained models, baselines, the demo's oracle), `rollout` the simulated
sessions, `outcomes` the arms' outcomes and effects with participant-bootstrap intervals, `cli`
the `grail-sim simulate` command.
"""
