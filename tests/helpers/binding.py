"""Config binding checks: every key a config names is read by the code.

Two kinds of node:
- a `_target_` node is bound when each key is a parameter of the target's signature and, for the
  project's own code, the callable's body uses that parameter; keys a target takes through
  `**kwargs` must be parameters of a callable the body forwards them to (`f(**kwargs)`,
  `super().__init__(**kwargs)`), or of the callable `KWARGS_GO_TO` names for a library target;
- a settings node (no `_target_`) is bound when the code reads each key: `track_reads()` records
  every `cfg.key`, `cfg["key"]` and `cfg.get("key")` while the code runs, and `unread_keys` lists
  the leaves it never read (a key another key interpolates, `${key}`, counts as read).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig

SPECIAL = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
OWN = ("audiobase", "audioscore", "rewards", "bench")
# library targets whose **kwargs go to another callable
KWARGS_GO_TO = {"lightning.pytorch.loggers.WandbLogger": "wandb.init"}
INTERPOLATION = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.]*)")


def _function(obj: Any) -> Callable[..., Any] | None:
    """The function whose body runs when `obj` is called (a class: its own __init__)."""
    if inspect.isclass(obj):
        init = obj.__dict__.get("__init__")
        if init is None:  # inherited: the first class in the MRO that defines one
            init = next(
                (c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__), None
            )
        return init
    return obj if inspect.isfunction(obj) else None


def _own(fn: Any) -> bool:
    return getattr(fn, "__module__", "").split(".")[0] in OWN


def _body(fn: Callable[..., Any]) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(fn)))


def _names_loaded(fn: Callable[..., Any]) -> set[str]:
    tree = _body(fn)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _saved_and_read(obj: Any, fn: Callable[..., Any], key: str) -> bool:
    """Lightning's `self.save_hyperparameters()` in `fn` stores the arguments in `self.hparams`:
    then `key` counts as used when the class reads it (`hp.key` or `hp["key"]`)."""
    calls = [
        c
        for c in ast.walk(_body(fn))
        if isinstance(c, ast.Call)
        and isinstance(c.func, ast.Attribute)
        and c.func.attr == "save_hyperparameters"
    ]
    if not calls or not inspect.isclass(obj):
        return False
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    return any(
        (isinstance(n, ast.Attribute) and n.attr == key and isinstance(n.ctx, ast.Load))
        or (
            isinstance(n, ast.Subscript)
            and isinstance(n.slice, ast.Constant)
            and n.slice.value == key
        )
        for n in ast.walk(tree)
    )


def _spreads(node: ast.AST, varkw: str) -> bool:
    """`node` is `varkw` or a dict display that spreads it (`{**varkw, "a": 1}`)."""
    if isinstance(node, ast.Name):
        return node.id == varkw
    if isinstance(node, ast.Dict):
        return any(
            k is None and _spreads(v, varkw) for k, v in zip(node.keys, node.values, strict=True)
        )
    return False


def _forwarded_to(obj: Any, fn: Callable[..., Any], varkw: str) -> list[Any]:
    """The callables `fn` passes `**varkw` to, resolved in its module (super().__init__: the
    next class in `obj`'s MRO)."""
    out: list[Any] = []
    for call in ast.walk(_body(fn)):
        if not isinstance(call, ast.Call):
            continue
        if not any(k.arg is None and _spreads(k.value, varkw) for k in call.keywords):
            continue
        f = call.func
        if isinstance(f, ast.Name) and f.id in fn.__globals__:
            out.append(fn.__globals__[f.id])
        elif (
            isinstance(f, ast.Attribute)
            and f.attr == "__init__"
            and isinstance(f.value, ast.Call)
            and isinstance(f.value.func, ast.Name)
            and f.value.func.id == "super"
            and inspect.isclass(obj)
        ):
            out.append(obj.__mro__[1])
    return out


def why_unbound(obj: Any, key: str, seen: frozenset[int] = frozenset()) -> str | None:
    """None when calling `obj(**{key: ...})` makes the code use the value; else the reason."""
    if id(obj) in seen:
        return "forwarded in a cycle"
    seen = seen | {id(obj)}
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return f"{obj!r} has no signature to check"
    named = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    varkw = next((n for n, p in params.items() if p.kind == p.VAR_KEYWORD), None)
    fn = _function(obj)
    if key in named:
        own = fn is not None and _own(fn) and not dataclasses.is_dataclass(obj)
        if own and key not in _names_loaded(fn) and not _saved_and_read(obj, fn, key):  # type: ignore[arg-type]
            return f"a parameter of {fn.__qualname__} that its body never uses"  # type: ignore[union-attr]
        return None
    if varkw is None:
        return f"not a parameter of {getattr(obj, '__qualname__', obj)}"
    qual = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    for library, callee in KWARGS_GO_TO.items():
        if get_object(library) is obj:
            return why_unbound(get_object(callee), key, seen)
    if fn is None or not _own(fn):
        return f"taken by **{varkw} of {qual}, which the check cannot follow"
    callees = _forwarded_to(obj, fn, varkw)
    if not callees:
        return f"taken by **{varkw} of {qual}, which forwards it nowhere"
    reasons = [why_unbound(c, key, seen) for c in callees]
    return (
        None
        if None in reasons
        else f"forwarded by {qual} to callables that ignore it ({reasons[0]})"
    )


def target_nodes(cfg: Any, where: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(path, node) for every `_target_` node in `cfg`, nested ones included."""
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            yield where, cfg
        for k in cfg.keys():
            yield from target_nodes(cfg._get_node(k), f"{where}.{k}" if where else str(k))
    elif isinstance(cfg, ListConfig):
        for i in range(len(cfg)):
            yield from target_nodes(cfg._get_node(i), f"{where}[{i}]")


def unbound_target_keys(cfg: DictConfig, reserved: dict[str, set[str]] | None = None) -> list[str]:
    """'path.key: reason' for every key of a `_target_` node that the target does not use.
    `reserved`: per node path, keys another reader takes out before the call (the runner's)."""
    out = []
    for where, node in target_nodes(cfg):
        target = get_object(node._get_node("_target_")._value())
        skip = SPECIAL | (reserved or {}).get(where, set())
        for key in node.keys():
            if key in skip:
                continue
            why = why_unbound(target, str(key))
            if why:
                out.append(f"{where + '.' if where else ''}{key}: {why}")
    return out


def unbound_kwargs(node: DictConfig, callee: Any, where: str) -> list[str]:
    """'where.key: reason' for keys of a node the code passes as `callee(**node)`."""
    return [f"{where}.{k}: {w}" for k in node.keys() if (w := why_unbound(callee, str(k)))]


@contextmanager
def track_reads() -> Iterator[set[tuple[int, str]]]:
    """Records (id of the root config, full key) for every key read through `cfg.key`,
    `cfg[key]` or `cfg.get(key)` (items() reads each key with cfg[key]) while the block runs."""
    reads: set[tuple[int, str]] = set()
    originals = {n: DictConfig.__dict__[n] for n in ("__getattr__", "__getitem__", "get")}

    def tracking(name: str) -> Callable[..., Any]:
        original = originals[name]

        def read(self: DictConfig, key: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(key, str) and not key.startswith("__"):
                try:
                    reads.add((id(self._get_root()), self._get_full_key(key)))
                except Exception:  # a key on a node being built; nothing to record
                    pass
            return original(self, key, *args, **kwargs)

        return read

    for name in originals:
        setattr(DictConfig, name, tracking(name))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(DictConfig, name, original)


def _interpolated(cfg: Any) -> set[str]:
    """Keys that `${key}` interpolations in `cfg` name (read when the value is resolved)."""
    out: set[str] = set()
    if isinstance(cfg, DictConfig | ListConfig):
        keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
        for k in keys:
            out |= _interpolated(cfg._get_node(k))
    else:
        value = cfg._value() if hasattr(cfg, "_value") else cfg
        if isinstance(value, str):
            out |= set(INTERPOLATION.findall(value))
    return out


def leaf_keys(cfg: DictConfig, skip: set[str], where: str = "") -> Iterator[str]:
    """Full keys of the settings leaves of `cfg`: `_target_` nodes and `skip` paths left out, a
    non-empty mapping replaced by its keys."""
    for k in cfg.keys():
        full = f"{where}.{k}" if where else str(k)
        node = cfg._get_node(k)
        if full in skip or (isinstance(node, DictConfig) and "_target_" in node):
            continue
        if isinstance(node, DictConfig) and not node._is_none() and len(node):
            yield from leaf_keys(node, skip, full)
        else:
            yield full


def unread_keys(
    cfg: DictConfig, reads: set[tuple[int, str]], skip: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """Settings leaves of `cfg` that no tracked read and no interpolation reached."""
    seen = {key for root, key in reads if root == id(cfg)} | _interpolated(cfg)
    return [k for k in leaf_keys(cfg, set(skip)) if k not in seen]
