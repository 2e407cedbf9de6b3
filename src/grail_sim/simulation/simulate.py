"""The simulate stage's orchestration: one predictor's sessions (or the observed ones) and their
outcomes for one issue (`grail-sim simulate` in cli.py is a thin wrapper around `simulate`).

Outputs in `out_dir` (Contract 5, docs/DESIGN.md): `sessions.jsonl` (one record per session) and
`summary.json` (the arms' outcomes and the effects with intervals, the settings, what was left out
and the timing). Sessions stream to `sessions.partial.jsonl` while they run, so a killed run
resumes from the finished ones when its fingerprint (predictor, model, inputs, settings) matches.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from grail_sim import io
from grail_sim.errors import EvaluationError, SimulationError
from grail_sim.simulation import observed, outcomes, predictors, rollout, world
from grail_sim.simulation.slates import STUDY_MIXES
from grail_sim.simulation.sources import BASELINES, OBSERVED, ORACLE

log = logging.getLogger(__name__)


def stance_labels(section: Mapping[str, Any], truth: Mapping[str, Any] | None,
                  demo_truth: Path | None) -> tuple[dict[str, str], str]:
    """Each video's stance and where it came from: the demo's ground `truth` (read from `demo_truth`),
    or simulate.video_stances."""
    if truth is not None:
        return dict(truth["oracle"]["stance_by_video"]), f"the demo ground truth {demo_truth}"
    if section["video_stances"]:
        return world.read_stance_file(section["video_stances"]), f"simulate.video_stances ({section['video_stances']})"
    raise SimulationError("no video stances: the capsule files grail-sim reads label no video's stance, and the slate "
                          "rule and the outcomes need one per video; set simulate.video_stances to a CSV with "
                          "columns id and stance (liberal / conservative)")


def _demo_truth(path: Path | None) -> dict[str, Any] | None:
    """The demo capsule's ground truth (stances and the oracle), read once; None off the demo."""
    if path is None:
        return None
    from grail_sim.data.demo_oracle import load_truth

    try:
        return load_truth(path)
    except EvaluationError as err:  # the reader is the evaluation's; here it is this stage's input
        raise SimulationError(str(err)) from None


def _predictor(name: str, *, prompts_dir: Path, model_dir: Path | None, truth: Mapping[str, Any] | None,
               evaluate_section: Mapping[str, Any], device: str):
    if name in BASELINES:
        from grail_sim.evaluation.evaluate import load_task_split

        try:
            train = load_task_split(prompts_dir, "next_video", "train")
        except EvaluationError as err:
            raise SimulationError(f"{name} is fitted on the prompts' train split: {err}") from None
        # Simulated slates are displayed slates: a row whose logged slate was lost holds the tree row
        # in its place, where the chosen video's position says nothing of the position the viewer
        # chose (on the demo those rows are a fifth of the 5-option rows and flatten the prior).
        displayed = [dict(r) for r in train if str(r.get("slate_source") or "displayed") == "displayed"]
        log.info("%s: fitted on %d displayed-slate train rows (%d tree-fallback rows left out)", name,
                 len(displayed), len(train) - len(displayed))
        return predictors.BaselinePredictor(name, displayed, evaluate_section["seed"])
    if name == ORACLE:
        if truth is None:
            raise SimulationError("the oracle exists on demo data only: pass --demo-truth")
        return predictors.OraclePredictor(truth)
    if model_dir is None:
        raise SimulationError(f"predictor {name!r} is a model: pass --model (its folder)")
    if not model_dir.is_dir():
        raise SimulationError(f"model folder {model_dir} does not exist")
    return predictors.ModelPredictor(name, model_dir, evaluate_section, device)


def _fingerprint(name: str, model_dir: Path | None, inputs: Mapping[str, Any], section: Mapping[str, Any],
                 evaluate_section: Mapping[str, Any], prompts_section: Mapping[str, Any]) -> dict[str, Any]:
    return {"predictor": name, "model_sha256": io.file_sha256(model_dir) if model_dir is not None else None,
            "inputs": {k: str(v) for k, v in inputs.items()}, "clean_sha256": io.file_sha256(inputs["clean"]),
            "settings": {"simulate": dict(section), "evaluate": dict(evaluate_section), "prompts": dict(prompts_section)}}


def simulate(*, predictor: str, issue: str, clean: Path, capsule: Path, prompts_dir: Path, out_dir: Path,
             section: Mapping[str, Any], evaluate_section: Mapping[str, Any], prompts_section: Mapping[str, Any],
             model_dir: Path | None = None, demo_truth: Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Simulate (or, for `observed`, read) the held-out participants' sessions and write their outcomes."""
    from grail_sim.prompts.settings import load_settings

    counters: Counter = Counter()
    sessions = observed.observed_sessions(observed.read_clean_table(clean), issue, counters)
    truth = _demo_truth(demo_truth)
    stances, stance_source = stance_labels(section, truth, demo_truth)
    catalogue = world.load_world(capsule, stances, observed.seed_pools(sessions), observed.slate_size_pools(sessions),
                                 stance_source)
    participants = observed.held_out(sessions, section["split"])
    if not participants:
        raise SimulationError(f"no participant of issue {issue!r} in split {section['split']!r}")
    counterfactual = section["counterfactual"]
    arms = rollout.experiment_arms(counterfactual["mix"], counterfactual["same_stance_share"])
    settings = load_settings(prompts_section)
    out_dir.mkdir(parents=True, exist_ok=True)
    described, timing = {"name": predictor}, None
    if predictor == OBSERVED:
        records = rollout.observed_records(participants, catalogue.stances, issue=issue, settings=settings)
        arm_names = [arm.name for arm in arms if arm.mix in STUDY_MIXES]
        io.write_jsonl(out_dir / "sessions.jsonl", records)
    else:
        records, timing, described = _rollout(predictor, participants, arms, catalogue, issue=issue, settings=settings,
                                              section=section, evaluate_section=evaluate_section,
                                              prompts_section=prompts_section, inputs={
                                                  "clean": clean, "capsule": capsule, "prompts": prompts_dir,
                                                  "demo_truth": demo_truth},
                                              model_dir=model_dir, truth=truth, device=device,
                                              out_dir=out_dir)
        arm_names = [arm.name for arm in arms]
    figures = outcomes.arm_effects(records, arm_names, counterfactual["mix"], samples=evaluate_section["bootstrap_samples"],
                                   seed=evaluate_section["seed"], confidence=evaluate_section["confidence"])
    summary = {"predictor": predictor, "issue": issue, "split": section["split"], "stance_source": stance_source,
               "replicates": 1 if predictor == OBSERVED else section["replicates"], "seed": section["seed"],
               "counterfactual": dict(counterfactual), "confidence": evaluate_section["confidence"],
               "bootstrap_samples": evaluate_section["bootstrap_samples"], "outcomes": list(outcomes.OUTCOMES),
               "predictor_settings": described, "left_out": dict(sorted(counters.items())), "timing": timing,
               **figures}
    io.write_json(out_dir / "summary.json", summary)
    log.info("simulate %s [%s, %s]: %d sessions of %d participants -> %s", predictor, issue, section["split"],
             summary["sessions"], summary["participants"], out_dir)
    return summary


def _rollout(name: str, participants, arms, catalogue, *, issue: str, settings, section, evaluate_section,
             prompts_section, inputs, model_dir, truth, device, out_dir: Path):
    from grail_sim.evaluation.streaming import RecordStream, progress_bar
    from grail_sim.prompts.settings import tokenizer_counter

    chooser = _predictor(name, prompts_dir=inputs["prompts"], model_dir=model_dir, truth=truth,
                         evaluate_section=evaluate_section, device=device)
    stream = RecordStream(out_dir, "sessions", _fingerprint(name, model_dir, inputs, section, evaluate_section,
                                                            prompts_section))
    done = {key for _, key in stream.done_ids()}
    todo = rollout.plan(participants, arms, section["replicates"], done)
    total = len(participants) * len(arms) * section["replicates"]
    log.info("simulate %s: %d of %d sessions to run (%d participants x %d arms x %d replicates), %d on disk",
             name, len(todo), total, len(participants), len(arms), section["replicates"], len(done))
    bar = progress_bar(len(todo), f"simulate {name}", unit="session")

    def write(records: list[dict]) -> None:  # flushed and synced per group: a kill loses one group at most
        with open(stream.partial, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())

    def progress(count: int) -> None:
        if bar is not None:
            bar.update(count)
        else:
            log.info("simulate %s: %d sessions more", name, count)

    timing = rollout.simulate_sessions(todo, catalogue, chooser, issue=issue, settings=settings,
                                       count=tokenizer_counter(model_dir) if model_dir is not None else None,
                                       seed=section["seed"], batch=section["session_batch"], write=write,
                                       progress=progress)
    if bar is not None:
        bar.close()
    records = sorted(io.read_jsonl(stream.partial), key=lambda r: r["id"]) if stream.partial.exists() else []
    stream.finish(iter(records))
    return records, timing, chooser.describe()
