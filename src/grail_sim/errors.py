"""The one error convention of grail-sim.

Every error a user can fix (a missing file, column or key, a bad value) is a `GrailSimError`
whose message names the culprit. `grail-sim <stage>` prints `grail-sim <stage>: <message>` and
exits 2 for these; any other exception is a bug and keeps its traceback.

Each stage has its own subclass, so a caller can catch one stage's errors. The subclasses also
derive from `ValueError` (bad input) or `RuntimeError` (a failed external step), as the standard
library would classify them.
"""

from __future__ import annotations


class GrailSimError(Exception):
    """A user error: the message names the file, column, key or value at fault."""


class ConfigError(GrailSimError, ValueError):
    """A configuration section or recipe that fails the schema (unknown key, wrong type, bad value)."""


class JsonlError(GrailSimError, ValueError):
    """A JSON Lines file with an unreadable line (the message names file:line)."""


class RowError(GrailSimError, ValueError):
    """A row whose column value does not follow its data contract (the message names row and column)."""


class CleanError(GrailSimError, ValueError):
    """The clean stage: raw capsule or pre-cleaned dataset that cannot be read as documented."""


class CapsuleError(CleanError):
    """A capsule file or column that is missing or malformed."""


class CleanConfigError(CleanError):
    """A clean configuration that would break a data rule (for example a post-treatment column)."""


class PromptError(GrailSimError, ValueError):
    """The prompts stage: interactions rows, templates or settings that cannot be rendered."""


class ProfileError(PromptError):
    """The profile phrase table, or a profile holding a column the table does not allow."""


class ModelError(GrailSimError, RuntimeError):
    """A base model or policy folder that cannot be built or loaded."""


class TrainError(GrailSimError, ValueError):
    """The train stage."""


class RecipeError(TrainError):
    """A training recipe with an unknown key or a bad value."""


class TrainingDataError(TrainError):
    """A prompt dataset that lacks what the trainer needs (split, columns, rows)."""


class ServerError(GrailSimError, RuntimeError):
    """The vLLM server of a training run did not start or stay healthy."""


class EvaluationError(GrailSimError, RuntimeError):
    """The evaluate stage: a prompt dataset or model that cannot be evaluated."""


class ReportError(GrailSimError, RuntimeError):
    """The report stage: missing or inconsistent evaluation outputs."""


class SimulationError(GrailSimError, RuntimeError):
    """The simulate stage: an input the in-silico experiment needs is missing or unusable."""
