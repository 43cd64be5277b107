"""The section "Overview": what was run (population, data, embedding, versions, time per stage)."""

from __future__ import annotations

import json
from typing import Any

from ..html import Code, Table, number
from ..rundir import RunView
from ._common import _run_policy, _variant
from ._registry import Section, section


def _seconds(s: Any) -> str:
    """A duration as text: seconds below two minutes, else minutes."""
    if not isinstance(s, (int, float)):
        return "n/a"
    return number(float(s), "s", 3) if s < 120 else number(float(s) / 60, "min", 3)


def _collapse_rounds(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row for the refinement rounds of the atlas field (``field:atlas-TAG-rNNN``)."""
    out: list[dict[str, Any]] = []
    rounds: dict[tuple[str, str], dict[str, Any]] = {}
    for s in stages:
        head, _, tail = s["stage"].partition(":atlas-")
        if tail:
            key = (s["where"], head)
            if key not in rounds:
                rounds[key] = {"where": s["where"], "stage": f"{head}: atlas rounds",
                               "seconds": 0.0, "info": {"rounds": 0, "points": 0}}
                out.append(rounds[key])
            r = rounds[key]
            r["seconds"] += float(s["seconds"] or 0.0)
            r["info"]["rounds"] += 1
            r["info"]["points"] += int(s["info"].get("points", 0) or 0)
        else:
            out.append(s)
    return out


_LOSS_TEXT = {"cross_entropy": "cross-entropy, mean over samples (nats)",
              "mse": "mean squared error, mean over samples"}


def _training_data(described: dict[str, str], manifest: dict[str, Any]) -> str:
    """The training data in words: the atlas summary's description, else the train
    manifest's ``data_source`` (recorded also for data given as an object), else its
    registered name, else a statement that the run did not record it."""
    source = manifest.get("data_source")
    source = source if isinstance(source, dict) else {}
    name = manifest.get("data")
    return (described.get("training data") or source.get("training data")
            or (str(name) if name else None)
            or "not recorded (given in Python as an object; train with a DatasetSplits "
               "or a registered name to have it named here)")


@section("overview", "Overview", hint="")
def overview(view: RunView) -> Section | None:
    """What was run: population, data, embedding, versions, time per stage."""
    meta = view.meta
    manifest = view.train_manifest or {}
    labels = view.labels
    described = view.atlas_summary.get("data")
    described = {str(k): str(v) for k, v in described.items()} if isinstance(
        described, dict) else {}
    info: dict[str, Any] = {"run directory": view.path.name}
    if meta.get("created"):
        info["created"] = str(meta["created"])
    n = view.num_models
    if n is not None:
        variants = sorted({_variant(lab) for lab in labels})
        info["population"] = number(n, "models") + (
            f" in {len(variants)} variant(s): " + ", ".join(variants) if labels else "")
        info["labels from"] = str(view.labels_and_source[1])
    if manifest:
        model = manifest.get("model")
        kw = manifest.get("model_kwargs") or {}
        info["model"] = str(f"{model} {json.dumps(kw, sort_keys=True)}" if kw else model)
        info["training data"] = str(_training_data(described, manifest))
        for key in ("test data", "loss measured on"):
            if described.get(key):
                info[key] = described[key]
        info["checkpoints"] = (f"every {manifest.get('checkpoint_every', '?')} epoch(s), "
                               f"device {manifest.get('device', '?')}")
    for key in ("training data", "test data", "loss measured on"):
        if described.get(key) and key not in info:
            info[key] = described[key]
    loss = view.population.get("loss") or view.atlas_summary.get("loss")
    if isinstance(loss, str):
        info["loss function"] = _LOSS_TEXT.get(loss, loss)
    bn, bn_text = _run_policy(view)
    if bn_text is not None:
        info["BatchNorm policy"] = bn_text
    config = meta.get("config") or {}
    if config:
        info["configuration"] = Code(json.dumps(config, sort_keys=True))
    emb = view.embedding or meta.get("embedding")
    if emb:
        info["embedding"] = (
            f"{emb.get('method')} to {emb.get('dim')}-D latent, exact residual correction "
            f"{'on' if emb.get('exact') else 'off'}, seed {emb.get('seed')}")
    if view.atlas is not None:
        a = view.atlas.attrs
        info["field"] = (number(int(view.atlas.sizes["sample"]), "samples")
                         + f", base grid {a.get('resolution', '?')} per axis, "
                           f"{a.get('rounds', '?')} refinement round(s)")
    if view.sub_runs:
        info["sub-runs"] = [part for k, name in enumerate(view.sub_runs)
                            for part in ([", "] if k else []) + [
                                Code(f"{name}/"), " (own report: ", Code(f"{name}/report.html"),
                                ")"]]
    tables = []
    variants_table = manifest.get("variants") or []
    if variants_table:
        keys = sorted({k for v in variants_table for k in v if k != "name"})
        rows = [[str(v.get("name", "?")), *[str(v.get(k, "")) for k in keys]]
                for v in variants_table]
        tables.append(Table(["variant", *keys], rows, "Variants (hyper-parameters)"))
    stages = _collapse_rounds(view.stages)
    if stages:
        rows = [[str(s["where"]), str(s["stage"]), _seconds(s["seconds"]),
                 ", ".join(f"{k}={json.dumps(v)}" for k, v in s["info"].items()
                           if not isinstance(v, (list, dict)))]
                for s in stages]
        tables.append(Table(["folder", "stage", "time", "details"], rows, "Time per stage"))
    if view.versions:
        tables.append(Table(["package", "version"],
                            [[str(k), str(v)] for k, v in sorted(view.versions.items())],
                            "Versions"))
    total = sum(s["seconds"] for s in stages if isinstance(s["seconds"], (int, float)))
    summary = {"models": n, "variants": sorted({_variant(lab) for lab in labels}),
               "stages": {f"{s['where']}/{s['stage']}".removeprefix("./"): s["seconds"]
                          for s in stages},
               "total_stage_seconds": round(total, 3), "versions": view.versions,
               "bn": bn, "bn_text": bn_text, "loss": loss if isinstance(loss, str) else None,
               "data": described, "sub_runs": view.sub_runs}
    return Section(template="sections/overview.html.j2", summary=summary,
                   data={"info": info, "tables": tables})
