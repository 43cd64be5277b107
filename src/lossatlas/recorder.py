"""A checkpoint and metrics recorder to drop into any training loop.

::

    rec = Recorder("runs/mine", steps="log", num=30, total_steps=len(loader) * epochs,
                   metadata={"variant": "A", "seed": 0})
    step = 0
    rec.step(model, step)                      # init (step 0 is in every schedule)
    for epoch in range(epochs):
        for x, y in loader:
            ...; opt.step(); step += 1
            rec.step(model, step, {"loss": loss})
    population = rec.population(make_model)

``step`` counts optimizer updates done so far: 0 is the initialisation and
``total_steps`` the weights after the last update. At a chosen step the model's
``state_dict`` is written to ``OUT/checkpoints/NAME.safetensors`` with a sidecar
``NAME.json`` holding its labels (``metadata`` + ``step`` + per-call labels), both
atomically. Metrics go to ``OUT/metrics.jsonl``, one JSON object per line, appended
and flushed line by line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch import nn

from .checkpoints import save_state_dict
from .store import atomic_write_json, atomic_write_text, jsonable

if TYPE_CHECKING:
    from .population import Population

__all__ = ["Recorder", "StepSchedule", "linear_steps", "log_steps", "read_jsonl", "select_steps"]

log = logging.getLogger(__name__)


def linear_steps(total_steps: int, num: int) -> list[int]:
    """``num`` evenly spaced unique integer steps in ``[0, total_steps]`` (both ends included)."""
    _check_total("linear_steps", total_steps)
    if num < 2:
        raise ValueError(f"linear_steps: num must be >= 2 (first and last step), got {num}")
    return sorted({int(round(s)) for s in np.linspace(0, total_steps, num)})


def log_steps(total_steps: int, num: int) -> list[int]:
    """About ``num`` log-spaced unique integer steps: 0, then geometric from 1 to ``total_steps``.

    Rounding merges neighbours at small steps; more geometric points are taken until
    ``num`` unique steps are reached (or every step in ``[0, total_steps]`` is used).
    """
    _check_total("log_steps", total_steps)
    if num < 2:
        raise ValueError(f"log_steps: num must be >= 2 (first and last step), got {num}")
    if total_steps == 0:
        return [0]
    num = min(num, total_steps + 1)
    k = num - 1
    while True:
        steps = {0} | {int(round(s)) for s in np.geomspace(1, total_steps, k)}
        if len(steps) >= num or k > 4 * (total_steps + 1):
            return sorted(steps)
        k += 1


def _check_total(who: str, total_steps: int | None) -> None:
    if total_steps is None:
        raise ValueError(f"{who}: total_steps is required for this schedule (optimizer steps)")
    if int(total_steps) != total_steps or total_steps < 0:
        raise ValueError(f"{who}: total_steps must be a non-negative int, got {total_steps!r}")


class StepSchedule:
    """The steps at which a checkpoint is taken.

    Either an explicit sorted list (``steps``) or an open-ended "every k steps"
    (``every``, with ``steps=None``). ``step in schedule`` is O(1).
    """

    def __init__(self, steps: Iterable[int] | None = None, every: int | None = None):
        if steps is None and every is None:
            raise ValueError("StepSchedule: give steps or every")
        self.every = every
        self.steps: list[int] | None = None if steps is None else sorted(set(steps))
        self._set = None if self.steps is None else set(self.steps)

    def __contains__(self, step: object) -> bool:
        if not isinstance(step, (int, np.integer)):
            return False
        if self._set is not None:
            return int(step) in self._set
        return int(step) >= 0 and int(step) % int(self.every) == 0  # type: ignore[arg-type]

    def __repr__(self) -> str:
        if self.steps is not None:
            head = ", ".join(map(str, self.steps[:8]))
            return f"StepSchedule([{head}{', ...' if len(self.steps) > 8 else ''}])"
        return f"StepSchedule(every={self.every})"


def select_steps(
    steps: Literal["linear", "log"] | Iterable[int] = "linear",
    every: int | None = None,
    num: int | None = None,
    total_steps: int | None = None,
) -> StepSchedule:
    """Build a :class:`StepSchedule`.

    Parameters
    ----------
    steps : "linear", "log" or a list of ints
        "linear": every ``every`` steps (0, k, 2k, ..., plus ``total_steps`` if given),
        or ``num`` evenly spaced steps in ``[0, total_steps]``. "log": ``num``
        log-spaced steps in ``[0, total_steps]`` (0 and ``total_steps`` included).
        A list: exactly those steps.
    every, num, total_steps : int, optional
        As above; ``total_steps`` is the number of optimizer updates of the run.
    """
    if isinstance(steps, str):
        if steps == "linear":
            if every is not None:
                if int(every) != every or every < 1:
                    raise ValueError(f"select_steps: every must be an int >= 1, got {every!r}")
                if total_steps is None:
                    return StepSchedule(every=int(every))
                _check_total("select_steps", total_steps)
                return StepSchedule([*range(0, int(total_steps) + 1, int(every)), total_steps])
            if num is None:
                raise ValueError(
                    "select_steps: steps='linear' needs every=K, or num=N with total_steps=T"
                )
            return StepSchedule(linear_steps(total_steps, int(num)))  # type: ignore[arg-type]
        if steps == "log":
            if num is None or total_steps is None:
                raise ValueError("select_steps: steps='log' needs num=N and total_steps=T")
            return StepSchedule(log_steps(int(total_steps), int(num)))
        raise ValueError(
            f"select_steps: steps must be 'linear', 'log' or a list of ints, got {steps!r}"
        )
    chosen = list(steps)
    bad = [s for s in chosen if not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise ValueError(f"select_steps: steps must be non-negative ints; bad entries {bad[:5]}")
    if not chosen:
        raise ValueError("select_steps: the list of steps is empty")
    return StepSchedule(int(s) for s in chosen)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON-lines file; a torn last line (killed writer) is skipped."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    lines = p.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("metrics file %s: skipped a torn last line", p)
                continue
            raise ValueError(f"metrics file {p}: line {i + 1} is not valid JSON") from None
    return rows


NameSpec = str | Callable[[dict[str, Any]], str]


class Recorder:
    """Saves checkpoints at chosen steps and metrics of a training run.

    Parameters
    ----------
    out_dir : directory (created if missing)
    steps, every, num, total_steps
        The checkpoint schedule, see :func:`select_steps`. Default: 10 evenly
        spaced steps when ``total_steps`` is given, else every 100 steps.
    metadata : dict, optional
        Labels stored with every checkpoint (``variant``, ``seed``, hyper-parameters).
    metrics_at : {"always", "checkpoints"}
        Record the metrics passed to :meth:`step` at every call, or only at
        checkpoint steps.
    name : str or callable(labels) -> str
        Checkpoint file stem, formatted with the labels (default ``"step{step:07d}"``;
        give e.g. ``"{variant}_seed{seed}_step{step:07d}"`` when several runs share a
        directory).
    checkpoint_dir : str
        Sub-directory of ``out_dir`` for checkpoints (``"checkpoints"``).
    metrics_file : str
        JSON-lines file relative to ``out_dir`` (``"metrics.jsonl"``). On the first
        recorded line, lines already in the file at or after that step are dropped,
        so a restarted run does not duplicate them.

    Attributes
    ----------
    schedule : StepSchedule
    paths : list[Path]
        Checkpoints written by this recorder, in call order.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        steps: Literal["linear", "log"] | Iterable[int] = "linear",
        every: int | None = None,
        num: int | None = None,
        total_steps: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        metrics_at: Literal["always", "checkpoints"] = "always",
        name: NameSpec = "step{step:07d}",
        checkpoint_dir: str = "checkpoints",
        metrics_file: str = "metrics.jsonl",
    ):
        if metrics_at not in ("always", "checkpoints"):
            raise ValueError(
                f"Recorder: metrics_at must be 'always' or 'checkpoints', got {metrics_at!r}"
            )
        if steps == "linear" and every is None and num is None:
            if total_steps is None:
                every = 100
            else:
                num = 10
        self.schedule = select_steps(steps, every=every, num=num, total_steps=total_steps)
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / checkpoint_dir
        self.metrics_path = self.out_dir / metrics_file
        self.metadata = dict(metadata or {})
        self.metrics_at = metrics_at
        self.name = name
        self.total_steps = total_steps
        self.paths: list[Path] = []
        self._metrics_started = False
        self._last_step: int | None = None

    # ------------------------------------------------------------------ core
    def wants(self, step: int) -> bool:
        """Whether ``step`` is a checkpoint step."""
        return step in self.schedule

    def labels_at(self, step: int, labels: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Labels of the checkpoint at ``step``: metadata, ``step``, then ``labels``."""
        return {**self.metadata, "step": int(step), **(labels or {})}

    def checkpoint_path(self, step: int, labels: Mapping[str, Any] | None = None) -> Path:
        """Where the checkpoint of ``step`` is (or would be) written."""
        full = self.labels_at(step, labels)
        if callable(self.name):
            stem = self.name(full)
        else:
            try:
                stem = self.name.format_map(full)
            except (KeyError, ValueError, IndexError) as err:
                raise ValueError(
                    f"Recorder: name template {self.name!r} cannot be filled from labels "
                    f"{sorted(full)} ({err!r}); add the label to metadata or change name="
                ) from None
        if not stem or "/" in stem or stem.startswith("."):
            raise ValueError(f"Recorder: invalid checkpoint name {stem!r}")
        return self.checkpoint_dir / f"{stem}.safetensors"

    def step(
        self,
        model: nn.Module,
        step: int,
        metrics: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
    ) -> Path | None:
        """Record ``step`` (optimizer updates done so far).

        Saves a checkpoint if ``step`` is in the schedule, and appends ``metrics``
        (scalars or 0-d tensors; one host sync per call) as a line
        ``{"step": step, **labels, **metrics}``. Returns the checkpoint path, or None.
        """
        step = int(step)
        path = None
        if step in self.schedule:
            path = self.save(model, step, labels)
        if metrics is not None and (self.metrics_at == "always" or path is not None):
            self.log_metrics(step, metrics, labels)
        self._last_step = step
        return path

    def save(
        self, model: nn.Module, step: int, labels: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the checkpoint of ``step`` now (weights, then the labels sidecar)."""
        path = self.checkpoint_path(step, labels)
        save_state_dict(model.state_dict(), path)
        atomic_write_json(path.with_suffix(".json"), self.labels_at(step, labels))
        if path not in self.paths:
            self.paths.append(path)
        log.debug("Recorder: saved %s", path)
        return path

    def log_metrics(
        self, step: int, metrics: Mapping[str, Any], labels: Mapping[str, Any] | None = None
    ) -> None:
        """Append one metrics line for ``step`` (flushed to disk)."""
        row = jsonable({"step": int(step), **(labels or {}), **metrics})
        if not self._metrics_started:
            self._metrics_started = True
            old = read_jsonl(self.metrics_path)
            keep = [r for r in old if isinstance(r.get("step"), int) and r["step"] < step]
            if len(keep) != len(old):
                log.info(
                    "Recorder: %s: dropped %d metrics lines at steps >= %d (restarted run)",
                    self.metrics_path, len(old) - len(keep), step,
                )
                atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    # --------------------------------------------------------------- results
    def metrics(self) -> list[dict]:
        """All metrics lines recorded so far (list of dicts, in order)."""
        return read_jsonl(self.metrics_path)

    def population(
        self,
        factory: Any,
        factory_kwargs: Mapping[str, Any] | None = None,
        bn: str | None = None,
    ) -> Population:
        """The checkpoints written by this recorder as a :class:`~lossatlas.population.Population`
        (``factory``: callable, ``"pkg.mod:fn"`` spec or registered model name; ``bn``: the
        BatchNorm policy, see :meth:`Population.from_checkpoints`)."""
        from .population import Population

        if not self.paths:
            raise ValueError(
                f"Recorder.population: no checkpoint written yet to {self.checkpoint_dir} "
                f"(schedule {self.schedule!r}); call step() at a scheduled step first"
            )
        return Population.from_checkpoints(
            list(self.paths), factory, factory_kwargs=factory_kwargs, bn=bn
        )

    def __repr__(self) -> str:
        return (
            f"Recorder(out_dir={str(self.out_dir)!r}, schedule={self.schedule!r}, "
            f"saved={len(self.paths)})"
        )
