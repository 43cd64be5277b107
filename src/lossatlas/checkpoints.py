"""Reading and writing model weights, matching them to a model, and their labels.

Formats, chosen by suffix:

- ``.pt`` / ``.pth`` / ``.bin``: `torch.load` with ``weights_only=True`` (no arbitrary
  pickled objects) on the CPU. The file may hold a state dict, or a dict with the state
  dict under ``"state_dict"``, ``"model_state_dict"``, ``"model"`` or ``"module"``.
- ``.ckpt`` (PyTorch Lightning): as above (``"state_dict"``); a prefix that every key
  shares (``model.``, ``net.``, ``module.``, ``_orig_mod.``) is stripped by default.
- ``.safetensors``: `safetensors.torch.load_file`.

Labels of a checkpoint (`read_labels`) come from, in increasing precedence: its file
name, a ``labels.json`` / ``population.json`` in its directory, and a sidecar
``<stem>.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InputTypeError, LossatlasError
from .store import atomic_path

__all__ = [
    "CheckpointError",
    "KNOWN_PREFIXES",
    "SUFFIXES",
    "load_for_model",
    "load_state_dict",
    "match_state_dict",
    "parse_labels",
    "read_labels",
    "save_state_dict",
]

SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
KNOWN_PREFIXES = ("module.", "model.", "net.", "_orig_mod.")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")


class CheckpointError(ValueError, LossatlasError):
    """A checkpoint that cannot be read or does not fit the model."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.suffix not in SUFFIXES:
        raise CheckpointError(
            f"checkpoint {p}: unknown suffix {p.suffix!r}; supported: {', '.join(SUFFIXES)}"
        )
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} not found")
    return p


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, Tensor) for v in obj.values())
    )


def _unwrap(obj: Any, p: Path) -> dict[str, Tensor]:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"checkpoint {p}: no state dict found (top-level keys: {keys}); expected a dict of "
            f"tensors or one under {', '.join(map(repr, _CONTAINER_KEYS))}"
        )
    raise CheckpointError(
        f"checkpoint {p}: holds a {type(obj).__name__}, expected a state dict "
        "(save with torch.save(model.state_dict(), path))"
    )


def _common_dotted_prefix(keys: list[str]) -> str:
    """Longest prefix ending in '.' shared by all keys, leaving every key non-empty."""
    parts = [k.split(".")[:-1] for k in keys]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "".join(f"{c}." for c in common)


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def _strip_known(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Repeatedly strip a known prefix that every key has (``module.model.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in KNOWN_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state, changed = _strip(state, prefix), True
    return state


def load_state_dict(
    path: str | os.PathLike[str], *, strip_prefix: str | bool | None = None
) -> dict[str, Tensor]:
    """Read the tensors of a checkpoint onto the CPU.

    Parameters
    ----------
    path : a ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` or ``.safetensors`` file.
    strip_prefix : ``None`` (default): strip a known prefix (``model.`` ...) shared by all
        keys for ``.ckpt`` files only; ``False``: never strip; a string: strip it from
        the keys that start with it; ``True``: strip the longest dotted prefix all keys
        share (this strips too far when the model's own keys share a prefix, e.g.
        ``layers.``; `match_state_dict` against the model is the safer route).

    Returns ``dict[str, Tensor]`` in file order (safetensors: sorted by name). Raises `FileNotFoundError`, or
    `CheckpointError` naming the file for an unknown suffix, a corrupt or truncated
    file, or one holding pickled objects other than tensors and plain containers.
    """
    p = _check_path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(p), device="cpu")
        except Exception as exc:
            raise CheckpointError(f"checkpoint {p} could not be read: {_reason(exc)}") from exc
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise CheckpointError(
                    f"checkpoint {p} holds pickled objects other than tensors, refused "
                    "(torch.load weights_only=True); re-save only the weights, e.g. "
                    "torch.save(model.state_dict(), path)"
                ) from exc
            raise CheckpointError(f"checkpoint {p} could not be read: {_reason(exc)}") from exc
        state = _unwrap(obj, p)
    if strip_prefix is None:
        return _strip_known(state) if p.suffix == ".ckpt" else state
    if strip_prefix is False:
        return state
    if strip_prefix is True:
        return _strip(state, _common_dotted_prefix(list(state)))
    return _strip(state, str(strip_prefix))


def match_state_dict(
    state: Mapping[str, Tensor], model: nn.Module, path: str | os.PathLike[str] = "<memory>"
) -> dict[str, Tensor]:
    """Return ``state`` with keys renamed to fit ``model.state_dict()``.

    Tries the keys as they are, then with known prefixes (``module.``, ``model.``,
    ``net.``, ``_orig_mod.``) stripped, then with the first 1, 2 or 3 levels of the
    dotted prefix that all keys share stripped. Raises `CheckpointError` (one line, naming ``path``) for the first
    missing or unexpected tensor, or the first shape mismatch.
    """
    target = model.state_dict()
    state = dict(state)
    common = _common_dotted_prefix(list(state)).split(".")[:-1]
    candidates = [state, _strip_known(state)]
    candidates += [_strip(state, "".join(f"{c}." for c in common[:n])) for n in (1, 2, 3)]
    chosen = next((c for c in candidates if c.keys() == target.keys()), None)
    if chosen is None:
        missing = [k for k in target if k not in state]
        unexpected = [k for k in state if k not in target]
        parts = []
        if missing:
            parts.append(f"model tensor {missing[0]!r} is missing ({len(missing)} missing)")
        if unexpected:
            parts.append(
                f"tensor {unexpected[0]!r} is not in the model ({len(unexpected)} unexpected)"
            )
        raise CheckpointError(
            f"checkpoint {path}: {'; '.join(parts)}; check the model factory and its "
            "arguments, or pass strip_prefix= to load_state_dict"
        )
    for name, want in target.items():
        got = chosen[name]
        if got.shape != want.shape:
            raise CheckpointError(
                f"checkpoint {path}: tensor {name!r} has shape {tuple(got.shape)}, model "
                f"expects {tuple(want.shape)}; check the model factory's arguments"
            )
        if want.is_floating_point() and not (got.is_floating_point() or got.is_complex()):
            # an integer or boolean tensor would be cast silently (weights of 0/1 or
            # integer codes): almost always the wrong file or a quantised export
            raise CheckpointError(
                f"checkpoint {path}: tensor {name!r} is {str(got.dtype).replace('torch.', '')}"
                f" but the model's is {str(want.dtype).replace('torch.', '')}; refusing to "
                "cast integer or boolean weights (a quantised or wrong checkpoint?)"
            )
    return {k: chosen[k] for k in target}


def nonfinite_tensor(state: Mapping[str, Tensor], path: str | os.PathLike[str]) -> str | None:
    """A one-line message naming ``path`` and the first floating tensor of ``state``
    with NaN/inf values, else None."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            return (f"checkpoint {path}: tensor {name!r} has {bad} non-finite value(s) "
                    f"(NaN/inf) of {t.numel()}; the run diverged?")
    return None


def load_for_model(path: str | os.PathLike[str], model: nn.Module,
                   finite: bool = False) -> dict[str, Tensor]:
    """`load_state_dict` then `match_state_dict`: a state dict ready for
    ``model.load_state_dict`` or `torch.func.functional_call`. ``finite=True`` refuses
    (`CheckpointError` naming the file and tensor) a checkpoint with NaN/inf weights."""
    state = match_state_dict(load_state_dict(path, strip_prefix=False), model, path)
    problem = nonfinite_tensor(state, path) if finite else None
    if problem is not None:
        raise CheckpointError(problem)
    return state


def owned_tensors(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors on the CPU, contiguous, each owning its whole storage, as safetensors
    requires (views into larger or shared storage are copied; others are not)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        storage = t.untyped_storage()
        if (storage.data_ptr() in seen or t.storage_offset()
                or storage.nbytes() != t.numel() * t.element_size()):
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def save_state_dict(state: Mapping[str, Tensor], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` atomically (temporary file in the same directory, then
    `os.replace`) as ``.pt``/``.pth`` (`torch.save`) or ``.safetensors``. Tensors are
    moved to the CPU; shared storage is copied for safetensors. Returns the path."""
    p = Path(path)
    if p.suffix not in (".pt", ".pth", ".safetensors"):
        raise CheckpointError(
            f"save_state_dict: cannot write {p}: suffix must be .pt, .pth or .safetensors"
        )
    for k, v in state.items():
        if not isinstance(v, Tensor):
            raise InputTypeError(
                f"save_state_dict: value of {k!r} is a {type(v).__name__}, not a Tensor"
            )
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        with atomic_path(p) as tmp:
            save_file(owned_tensors(state), str(tmp))
    else:
        with atomic_path(p) as tmp:
            torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    return p


# ----------------------------------------------------------------------------- labels

_ALIASES = {
    "variant": "variant", "var": "variant",
    "seed": "seed", "s": "seed",
    "epoch": "epoch", "ep": "epoch", "e": "epoch",
    "step": "step", "steps": "step", "it": "step", "iter": "step", "iteration": "step",
}  # fmt: skip
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_KEY_NUMBER = re.compile(r"([A-Za-z]+)(" + _NUMBER.pattern + r")")


def _value(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_labels(name: str) -> dict[str, Any]:
    """Labels parsed from a checkpoint file name (the suffix is ignored).

    The stem is split into tokens on ``-``, ``_`` and whitespace. Keys and their aliases:
    ``variant`` (``var``), ``seed`` (``s``), ``epoch`` (``ep``, ``e``), ``step``
    (``steps``, ``it``, ``iter``, ``iteration``). A token is read as

    1. ``key=value`` (any key, e.g. Lightning's ``epoch=3-step=500``);
    2. a known key followed by a number (``seed3``, ``s3``, ``e10``) or, for
       ``variant``, by any text (``variantA``);
    3. a known key alone, taking the next token as its value if it is a number (or any
       text for ``variant``): ``step_1000``, ``variant_A``.

    Numbers become int or float. Remaining tokens, joined by ``_``, become the
    ``variant`` unless one was given: ``A-s3-e10`` -> ``{variant: "A", seed: 3,
    epoch: 10}``; ``step_1000`` -> ``{step: 1000}``.
    """
    stem = Path(name).name
    for suffix in SUFFIXES + (".json",):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    tokens = [t for t in re.split(r"[-_\s]+", stem) if t]
    labels: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        low = tok.lower()
        m = _KEY_NUMBER.fullmatch(tok)
        if "=" in tok:
            key, _, val = tok.partition("=")
            labels[_ALIASES.get(key.lower(), key)] = _value(val)
        elif (
            low in _ALIASES
            and i + 1 < len(tokens)
            and (_ALIASES[low] == "variant" or _NUMBER.fullmatch(tokens[i + 1]))
        ):
            labels[_ALIASES[low]] = _value(tokens[i + 1])
            i += 1
        elif m and m.group(1).lower() in _ALIASES:
            labels[_ALIASES[m.group(1).lower()]] = _value(m.group(2))
        elif low.startswith("variant") and len(tok) > len("variant"):
            labels["variant"] = tok[len("variant") :]
        else:
            rest.append(tok)
        i += 1
    if rest and "variant" not in labels:
        labels["variant"] = "_".join(rest)
    return labels


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"labels file {path} could not be read: {_reason(exc)}") from exc


def _directory_labels(p: Path) -> dict[str, Any]:
    for fname in ("labels.json", "population.json"):
        f = p.parent / fname
        if not f.is_file():
            continue
        table = _read_json(f)
        if isinstance(table, Mapping) and isinstance(table.get("models"), list):
            table = table["models"]
        if isinstance(table, list):  # [{"path": "a.pt", "seed": 0, ...}, ...]
            for row in table:
                ref = row.get("path", row.get("file")) if isinstance(row, Mapping) else None
                if ref is not None and Path(ref).name in (p.name, p.stem):
                    return {k: v for k, v in row.items() if k not in ("path", "file")}
        elif isinstance(table, Mapping):  # {"a.pt": {...}} or {"a": {...}}
            for key in (p.name, p.stem):
                if isinstance(table.get(key), Mapping):
                    return dict(table[key])
    return {}


def read_labels(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Labels of a checkpoint (``variant``, ``seed``, ``epoch``, ``step``, any others).

    Merged from, later overriding earlier: `parse_labels` of the file name; the entry
    for the file in ``labels.json`` or ``population.json`` in its directory (a dict
    keyed by file name or stem, or a list of dicts with a ``"path"``/``"file"`` key);
    the sidecar ``<stem>.json`` (a dict). The checkpoint itself need not exist.
    """
    p = Path(path)
    labels = parse_labels(p.name)
    variant = labels.get("variant")
    if isinstance(variant, str) and not any(c.isalnum() for c in variant):
        # a name the parser cannot read (``..__seed4``): a default label, and a warning
        labels["variant"] = p.stem
        logging.getLogger(__name__).warning(
            "checkpoint %s: no variant can be read from the file name; using %r", p, p.stem)
    labels.update(_directory_labels(p))
    sidecar = p.with_suffix(".json")
    if sidecar.is_file() and sidecar != p:
        side = _read_json(sidecar)
        if not isinstance(side, Mapping):
            raise CheckpointError(
                f"labels file {sidecar} holds a {type(side).__name__}, expected a JSON object"
            )
        labels.update(side)
    return labels
