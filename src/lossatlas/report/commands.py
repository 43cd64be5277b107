"""The commands that fill a run's absent report sections, written out for this run.

A section's ``hint`` (see :func:`lossatlas.report.sections.section`) is a command
template with the placeholders ``{run}`` (the run directory), ``{population}``
(``--population`` source), ``{data}`` (``--data`` and friends: the data the atlas
was measured on), ``{dataset}`` (only ``--data`` and ``--data-arg``), ``{model}`` (``--model`` and ``--model-arg``), ``{train}`` (the run's training folder) and ``{a}`` / ``{b}`` (two
final checkpoints). :func:`fill_hint` puts in what the run recorded; what it did not
record stays as an upper-case placeholder in angle brackets (``<DATA>``), to be
replaced by hand. Braces that are not placeholders are left as written.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .rundir import RunView

__all__ = ["absent_panel", "fill_hint", "run_context"]

_PLACEHOLDER = re.compile(r"\{(run|population|data|dataset|model|train|a|b)\}")


def _q(path: str | Path) -> str:
    return shlex.quote(str(path))


def _final_checkpoints(view: RunView) -> list[str]:
    """Paths of the last checkpoint of each training run (variant, seed), in order."""
    from .sections import _runs_of  # one definition of a training run's order

    paths = view.population.get("paths")
    if not isinstance(paths, list) or not paths:
        return []
    labels = view.labels if len(view.labels) == len(paths) else [{} for _ in paths]
    finals = [run[-1] for run in _runs_of(labels) if run]
    chosen = finals if len(finals) >= 2 else [0, len(paths) - 1]
    return [str(paths[i]) for i in chosen if isinstance(paths[i], str)]


def _opens_alone(path: Path) -> bool:
    """True when ``--population PATH`` reads without ``--model``: a train run (as
    :func:`~lossatlas.population.source_kind` decides it) whose ``train.json`` names the
    model. Checks the path only: a report may be read where the checkpoints are not."""
    from ..population import TRAIN_MANIFEST, is_train_run

    return is_train_run(path) and (path / TRAIN_MANIFEST).is_file()


def _population(view: RunView) -> str:
    """The ``--population`` source: the run's training folder, else the one directory of
    the stored checkpoint paths (or the train run above it), else ``<CHECKPOINTS>``."""
    train = view.path / "train"
    if _opens_alone(train):
        return _q(train)
    paths = view.population.get("paths")
    if isinstance(paths, list) and paths and all(isinstance(p, str) for p in paths):
        dirs = {str(Path(p).parent) for p in paths}
        if len(dirs) == 1:
            d = Path(dirs.pop())
            return _q(d.parent if _opens_alone(d.parent) else d)
    return "<CHECKPOINTS>"


def _data_options(view: RunView) -> tuple[str, str]:
    """``--data NAME [--data-arg k=v]`` and the same followed by ``[--split test]
    [--samples N]``, as the run recorded them (train manifest, else the atlas summary's
    description); ``--data <DATA>`` when neither names the data."""
    manifest = view.train_manifest or {}
    described = view.atlas_summary.get("data")
    described = described if isinstance(described, dict) else {}
    source = manifest.get("data_source") if isinstance(manifest.get("data_source"), dict) else {}
    name = manifest.get("data") if isinstance(manifest.get("data"), str) else None
    text = described.get("training data") or source.get("training data")
    if name is None and isinstance(text, str) and text.strip():
        # DatasetSplits.train_source: "SPEC (train split, N samples)" or "SPEC (returned)"
        name = text.split(" (")[0].strip() or None
    parts = ["--data", _q(name) if name else "<DATA>"]
    if name and name == manifest.get("data"):
        for k, v in (manifest.get("data_kwargs") or {}).items():
            parts += ["--data-arg", _q(f"{k}={v}")]
    dataset = " ".join(parts)
    measured = str(described.get("loss measured on") or "")
    if "of the test data" in measured:
        parts += ["--split", "test"]
    m = re.search(r"the first (\d+) samples", measured)
    if m:
        parts += ["--samples", m.group(1)]
    return dataset, " ".join(parts)


def _model_options(view: RunView) -> str:
    """``--model NAME [--model-arg k=v ...]`` from the train manifest, else ``--model <MODEL>``."""
    manifest = view.train_manifest or {}
    name = manifest.get("model")
    if not isinstance(name, str) or not name:
        return "--model <MODEL>"
    parts = ["--model", _q(name)]
    for k, v in (manifest.get("model_kwargs") or {}).items():
        parts += ["--model-arg", _q(f"{k}={json.dumps(v, separators=(',', ':'))}")]
    return " ".join(parts)


def run_context(view: RunView) -> dict[str, str]:
    """The placeholder values of :func:`fill_hint` for ``view`` (shell-quoted)."""
    finals = _final_checkpoints(view)
    dataset, data = _data_options(view)
    return {
        "run": _q(view.path),
        "train": _q(view.path / "train"),
        "population": _population(view),
        "data": data,
        "dataset": dataset,
        "model": _model_options(view),
        "a": _q(finals[0]) if len(finals) > 0 else "<CHECKPOINT_A>",
        "b": _q(finals[1]) if len(finals) > 1 else "<CHECKPOINT_B>",
    }


def fill_hint(hint: str, context: dict[str, str]) -> str:
    """``hint`` with its placeholders replaced from ``context`` (raw text, not escaped)."""
    return _PLACEHOLDER.sub(lambda m: context.get(m.group(1), m.group(0)), hint)


def absent_panel(absent: Sequence[Any], view: RunView) -> str:
    """The "Absent sections" panel (HTML, ``templates/absent.html.j2``): one row per
    absent section with the command that fills it, and the sentence about writing into
    the atlas's ``--out``; ``""`` when nothing is absent. ``absent``:
    :class:`~lossatlas.report.sections.SectionSpec`."""
    if not absent:
        return ""
    from .render import render

    ctx = run_context(view)
    rows = [{"key": spec.key, "title": spec.title,
             "command": fill_hint(spec.hint, ctx) if spec.hint else ""} for spec in absent]
    return render("absent.html.j2", rows=rows, run=ctx["run"])
