"""The evaluate stage: generators, per-row scoring with resumable predictions, and metrics with
participant-bootstrap intervals beside the baselines."""
