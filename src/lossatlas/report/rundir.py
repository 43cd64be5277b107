"""A read-only view of a run directory: every stored result the report can show.

Nothing here computes a loss: the view opens ``run.json`` files, zarr fields and
JSON results, each once (cached), and answers ``None`` for what a run lacks.

Where the report looks (``RUN`` is the run directory)::

    RUN/run.json, RUN/*/run.json     configuration, versions, stages {name: {seconds, ...}}
    RUN/fields/atlas.zarr            the refined latent field (Atlas.field)
    RUN/topology.json                basins, threshold, model_basin (Atlas.topology)
    RUN/faithfulness.json            how far to trust the map (Atlas.faithfulness)
    RUN/embedding/embedding.json     embedding settings; codes.safetensors ("codes" [N, d])
    RUN/overlays/NAME.json           points projected onto the map (Atlas.overlay)
    RUN/population.json              model labels ({"labels": [...]}), the BatchNorm
                                     policy (bn, bn_text) and the loss; labels else from the
    RUN/train/checkpoints/*.json     sidecar labels of the training run (natural order)
    RUN/train/metrics.json           metrics along training per run (train_population)
    RUN/fields/*.zarr, RUN/slices/fields/*.zarr   slices (fields with attrs["slice"])
    RUN/fields/barriers*.zarr        barrier matrices [model_i, model_j] (connectivity)
    RUN/fields/curve*.zarr           loss along connecting curves [t] (connectivity)
    RUN/fields/layerwise*.zarr       layer-wise barriers [group, anchor] (connectivity)
    RUN/fields/terrain.zarr          local qualifiers per model [model] (curvature)
    RUN/atlas_summary.json           the atlas CLI's summary (data described, policy, loss)
    RUN/connectivity.json, RUN/terrain.json   the CLI's tables (their BatchNorm policy)
    RUN/SUB/atlas_summary.json       sub-runs with an atlas of their own (e.g. the demo's)
    RUN/align.json                   alignment results (symmetry; lossatlas align)
    RUN/dynamics.json                transitions along training (dynamics)
    RUN/branches.json, RUN/train/branches.json   algorithmic branches within basins
    RUN/curves.json                  a trained curve beside the straight line (line_loss)
    RUN/fields/line*.zarr            loss along the straight line (lossatlas connect A B)
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["RunView", "model_label"]

_FIELD_GROUPS = ("barriers", "curve", "layerwise", "terrain")


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def model_label(labels: dict[str, Any], index: int) -> str:
    """A short text for one model: ``variant/seed/epoch`` from its labels (``model i`` else)."""
    parts = []
    if "variant" in labels:
        parts.append(str(labels["variant"]))
    if "seed" in labels:
        parts.append(f"seed {labels['seed']}")
    if "epoch" in labels:
        parts.append(f"epoch {labels['epoch']}")
    elif "step" in labels:
        parts.append(f"step {labels['step']}")
    return " / ".join(parts) if parts else f"model {index}"


class RunView:
    """What a run directory holds, read lazily and cached; ``None`` for what is absent.

    Parameters
    ----------
    path : the run directory (must exist and hold a ``run.json`` at its top level or one
        level down, a ``train.json`` or a ``fields/`` folder).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a directory or holds no ``run.json`` at all.
    ValueError
        If a stored JSON file is not valid JSON (the message names the file).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"report: run directory {self.path} not found")
        self._fields: dict[str, xr.Dataset | None] = {}
        markers = ("fields", "train.json", "train/train.json", "topology.json")
        if not self.run_files and not any((self.path / m).exists() for m in markers):
            raise FileNotFoundError(
                f"report: {self.path} holds no run.json (at its top or one level down), "
                "train.json or fields/; is it a lossatlas run directory?"
            )

    # ------------------------------------------------------------ helpers
    def _json(self, rel: str | Path) -> Any | None:
        p = self.path / rel
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"report: {p} is not valid JSON ({err})") from err

    def _zarr(self, p: Path) -> xr.Dataset | None:
        if not p.is_dir():
            return None
        with xr.open_zarr(p, consolidated=False) as ds:
            return ds.load()

    # ------------------------------------------------------------ run.json
    @cached_property
    def run_files(self) -> dict[str, Path]:
        """``run.json`` files: ``""`` for the run itself, sub-folder names for the others."""
        out: dict[str, Path] = {}
        if (self.path / "run.json").is_file():
            out[""] = self.path / "run.json"
        for sub in sorted(self.path.iterdir(), key=lambda p: _natural_key(p.name)):
            if sub.is_dir() and (sub / "run.json").is_file():
                out[sub.name] = sub / "run.json"
        return out

    @cached_property
    def metas(self) -> dict[str, dict]:
        """Contents of every ``run.json`` (same keys as :attr:`run_files`)."""
        out = {}
        for k, p in self.run_files.items():
            out[k] = self._json(p.relative_to(self.path)) or {}
        return out

    @cached_property
    def meta(self) -> dict:
        """The run's own ``run.json`` (or the first one found below it)."""
        return self.metas.get("", next(iter(self.metas.values()), {}))

    @cached_property
    def stages(self) -> list[dict[str, Any]]:
        """Every recorded stage: ``{"where", "stage", "seconds", "info"}``."""
        rows = []
        for where, meta in self.metas.items():
            for name, rec in (meta.get("stages") or {}).items():
                rec = rec if isinstance(rec, dict) else {}
                rows.append({"where": where or ".", "stage": str(name),
                             "seconds": rec.get("seconds"),
                             "info": {k: v for k, v in rec.items() if k != "seconds"}})
        return rows

    @cached_property
    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for meta in self.metas.values():
            for k, v in (meta.get("versions") or {}).items():
                out.setdefault(str(k), str(v))
        return out

    # -------------------------------------------------------------- atlas
    @cached_property
    def atlas(self) -> xr.Dataset | None:
        """``fields/atlas.zarr``: the refined field over dim ``sample``."""
        return self._zarr(self.path / "fields" / "atlas.zarr")

    @cached_property
    def topology(self) -> dict | None:
        return self._json("topology.json")

    @cached_property
    def faithfulness(self) -> dict | None:
        return self._json("faithfulness.json")

    @cached_property
    def embedding(self) -> dict | None:
        return self._json(Path("embedding") / "embedding.json")

    @cached_property
    def population(self) -> dict:
        """``population.json`` as a dict (``{}`` when absent or a bare list of labels):
        labels, paths, dim, and the BatchNorm policy ``bn``/``bn_text`` and ``loss``."""
        pop = self._json("population.json")
        return pop if isinstance(pop, dict) else {}

    @cached_property
    def atlas_summary(self) -> dict:
        """``atlas_summary.json`` (the atlas CLI's and demo's summary), ``{}`` if absent."""
        s = self._json("atlas_summary.json")
        return s if isinstance(s, dict) else {}

    @cached_property
    def connectivity_table(self) -> dict:
        """``connectivity.json`` (barrier matrices, names, ``bn``), ``{}`` if absent."""
        s = self._json("connectivity.json")
        return s if isinstance(s, dict) else {}

    @cached_property
    def terrain_table(self) -> dict:
        """``terrain.json`` (measures per model, ``bn``), ``{}`` if absent."""
        s = self._json("terrain.json")
        return s if isinstance(s, dict) else {}

    @cached_property
    def sub_runs(self) -> list[str]:
        """Sub-folders holding an atlas of their own (``SUB/atlas_summary.json`` or
        ``SUB/topology.json``), e.g. the demo's ``bn_cnn``; natural order."""
        return [p.name for p in sorted(self.path.iterdir(), key=lambda p: _natural_key(p.name))
                if p.is_dir() and not p.name.startswith(".")
                and ((p / "atlas_summary.json").is_file() or (p / "topology.json").is_file())]

    @cached_property
    def codes(self) -> np.ndarray | None:
        """The models' latent codes ``[N, d]`` (from the field when the file is absent)."""
        p = self.path / "embedding" / "codes.safetensors"
        if p.is_file():
            from safetensors.numpy import load_file

            return np.asarray(load_file(str(p))["codes"], dtype=np.float64)
        ds = self.atlas
        if ds is not None and "model_sample" in ds:
            idx = ds["model_sample"].values.astype(int)
            return np.stack([ds[c].values[idx] for c in self.latent_dims], axis=1)
        return None

    @property
    def latent_dims(self) -> list[str]:
        ds = self.atlas
        if ds is None:
            return []
        return sorted((c for c in ds.coords if re.fullmatch(r"z\d+", str(c))),
                      key=lambda c: int(str(c)[1:]))

    @cached_property
    def num_models(self) -> int | None:
        ds = self.atlas
        if ds is not None and "model_sample" in ds:
            return int(ds.sizes["model"])
        if self.topology and "model_basin" in self.topology:
            return len(self.topology["model_basin"])
        return None

    @cached_property
    def overlays(self) -> dict[str, dict]:
        """``overlays/NAME.json`` by name (codes, true_loss, projected_loss, labels, mae)."""
        d = self.path / "overlays"
        if not d.is_dir():
            return {}
        return {p.stem: self._json(p.relative_to(self.path)) or {}
                for p in sorted(d.glob("*.json"), key=lambda p: _natural_key(p.name))}

    # ------------------------------------------------------------ labels
    @cached_property
    def labels_and_source(self) -> tuple[list[dict[str, Any]], str]:
        """One label dict per atlas model and where they came from.

        ``RUN/population.json`` (``{"labels": [...]}`` or a list) first, then the sidecar
        JSON of ``RUN/train/checkpoints`` in natural file order (the order of
        ``Population.from_run``) when their number matches the atlas's models; else
        ``{}`` per model.
        """
        n = self.num_models
        pop = self._json("population.json")
        if isinstance(pop, dict):
            pop = pop.get("labels", pop.get("models"))
        if isinstance(pop, list) and all(isinstance(x, dict) for x in pop):
            if n is None or len(pop) == n:
                return [dict(x) for x in pop], "population.json"
        ckpt = self.path / "train" / "checkpoints"
        if ckpt.is_dir():
            sidecars = sorted((p for p in ckpt.glob("*.json") if not p.name.startswith(".")),
                              key=lambda p: _natural_key(str(p)))
            if sidecars and (n is None or len(sidecars) == n):
                labels = []
                for p in sidecars:
                    lab = self._json(p.relative_to(self.path))
                    labels.append(lab if isinstance(lab, dict) else {})
                return labels, "train/checkpoints/*.json"
        return [{} for _ in range(n or 0)], "none"

    @property
    def labels(self) -> list[dict[str, Any]]:
        return self.labels_and_source[0]

    @property
    def label_texts(self) -> list[str]:
        """:func:`model_label` of every model (raw text, not escaped)."""
        return [model_label(lab, i) for i, lab in enumerate(self.labels)]

    # ------------------------------------------------------------ training
    @cached_property
    def train_manifest(self) -> dict | None:
        return self._json(Path("train") / "train.json") or self._json("train.json")

    @cached_property
    def metrics(self) -> dict | None:
        """Metrics along training: ``{"runs": {key: {"variant", "seed", "epochs": [...]}}}``."""
        m = self._json(Path("train") / "metrics.json") or self._json("metrics.json")
        if isinstance(m, dict) and isinstance(m.get("runs", m), dict):
            return m
        return None

    # -------------------------------------------------------------- fields
    @cached_property
    def field_paths(self) -> dict[str, Path]:
        """Stored zarr fields other than the atlas and its refinement rounds, by name
        (``slices/NAME`` for those under ``RUN/slices``)."""
        out: dict[str, Path] = {}
        for prefix, d in (("", self.path / "fields"), ("slices/", self.path / "slices" / "fields")):
            if not d.is_dir():
                continue
            for p in sorted(d.glob("*.zarr"), key=lambda p: _natural_key(p.name)):
                if p.stem == "atlas" or p.stem.startswith("atlas-") or p.name.startswith("."):
                    continue
                out[prefix + p.stem] = p
        return out

    def field(self, name: str) -> xr.Dataset | None:
        """The stored field ``name`` (a key of :attr:`field_paths`), loaded; None if absent."""
        p = self.field_paths.get(name)
        return None if p is None else self._cached_field(name, p)

    def _cached_field(self, name: str, p: Path) -> xr.Dataset | None:
        if name not in self._fields:
            self._fields[name] = self._zarr(p)
        return self._fields[name]

    def fields_named(self, prefix: str) -> dict[str, xr.Dataset]:
        """Top-level fields whose name starts with ``prefix`` (e.g. ``"barriers"``)."""
        return {n: ds for n in self.field_paths if n.startswith(prefix)
                and (ds := self.field(n)) is not None}

    @cached_property
    def slices(self) -> dict[str, xr.Dataset]:
        """Fields stored by a slice (``attrs["slice"]`` present), by name."""
        out = {}
        for name in self.field_paths:
            if name.split("/")[-1].startswith(_FIELD_GROUPS):
                continue
            ds = self.field(name)
            if ds is not None and "slice" in ds.attrs and "loss" in ds:
                out[name] = ds
        return out

    def slice_info(self, name: str) -> dict:
        ds = self.slices.get(name)
        if ds is None:
            return {}
        try:
            return json.loads(ds.attrs["slice"])
        except (TypeError, ValueError):
            return {}

    def slice_pngs(self, name: str) -> list[Path]:
        """PNG figures stored beside a slice (``NAME.png``, ``NAME_3d.png``)."""
        base = self.path / ("slices" if name.startswith("slices/") else "")
        stem = name.split("/")[-1]
        return [p for p in (base / f"{stem}.png", base / f"{stem}_3d.png") if p.is_file()]

    # ------------------------------------------------------- other results
    @cached_property
    def symmetry(self) -> dict | None:
        """``align.json``, what ``lossatlas align --out RUN`` writes (else an older
        ``symmetry.json``)."""
        return self._json("align.json") or self._json("symmetry.json")

    @cached_property
    def dynamics(self) -> dict | None:
        """``dynamics.json`` of the run, or of its ``train/`` folder."""
        return self._json("dynamics.json") or self._json(Path("train") / "dynamics.json")

    @cached_property
    def branches(self) -> dict | None:
        """``branches.json`` of the run, or of its ``train/`` folder (where ``lossatlas
        branches RUN/train`` writes it)."""
        return self._json("branches.json") or self._json(Path("train") / "branches.json")

    @cached_property
    def curves_table(self) -> dict:
        """``curves.json`` (a trained curve's ``t``, ``loss`` and the straight line's
        ``line_loss`` beside it, ``pair``, ``kind``), ``{}`` if absent."""
        s = self._json("curves.json")
        return s if isinstance(s, dict) else {}

    def png(self, name: str) -> Path | None:
        """``RUN/NAME`` if it is a PNG file."""
        p = self.path / name
        return p if p.is_file() and p.suffix == ".png" else None
