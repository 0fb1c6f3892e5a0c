"""Which `_target_`s a stored config may name, checked before Hydra builds anything.

An export's `config.yaml` (or a run's `.hydra/config.yaml`, or a checkpoint's hparams) is data
that Hydra turns into calls: `_target_: builtins.open` with `mode: w` would truncate a file the
moment the scorer loads. So a stored config may only name the project's own components:

- a class defined under `audioscore.models` or `audiobase` that is an `nn.Module` subclass or a
  dataclass (`audiobase.preprocess.Preprocess`), or
- a function defined there and marked with `@component` (a factory that builds a module and
  writes nothing).

The rule names no component, so a new module or dataclass needs no edit here; helpers that
write files (`build_tiny_muq_dir`, `audiobase.files.write_text`) stay out because they are
plain, unmarked functions. Only modules inside those packages are imported while checking.

Hydra resolves OmegaConf interpolations (`${...}`) in whatever it builds, so a string such as
`${oc.create:{_target_: builtins.open, ...}}` (or an escaped `\\${...}`, which Hydra's own
resolve-then-read turns live) would name a target no check saw. So the check runs on the fully
resolved tree and refuses any key or value still holding `${`; configs that are resolved first
(a run's `.hydra/config.yaml`, a model config) may only reference other keys and call the
resolvers in `SAFE_RESOLVERS`, which read a value and build nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, grammar_parser
from omegaconf.errors import GrammarParseError, OmegaConfBaseException
from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

from audiobase.weights import UserError

COMPONENT_PACKAGES = ("audioscore.models", "audiobase")
COMPONENT_MARK = "__config_component__"

# resolvers a config read from disk may call: each reads a value and builds nothing
# (`oc.create`, `oc.decode` and any resolver a program registers are refused)
SAFE_RESOLVERS: frozenset[str] = frozenset({"oc.env", "oc.select", "now", "hydra"})
INTERPOLATION = "${"

F = TypeVar("F", bound=Callable[..., Any])


class UntrustedInputError(UserError, ValueError):
    """An input from outside (a file, a folder) refused as malformed or as asking to run code;
    the message names the file and the reason. CLIs exit 2 on it."""


class StoredConfigError(UntrustedInputError):
    """A config read from disk that cannot be used as data; names the file, the key and why."""

    def __init__(self, where: str, key: str, reason: str, message: str | None = None) -> None:
        self.where, self.key, self.reason = where, key, reason
        super().__init__(message or f"{where}: refusing {key}: {reason}")


class UnsafeTargetError(StoredConfigError):
    """A `_target_` outside the allowed components; names the config, the key path and target."""

    def __init__(self, where: str, key: str, target: Any, reason: str) -> None:
        self.target = target
        super().__init__(
            where,
            key,
            reason,
            f"{where}: refusing {key} = {target!r}: {reason} (a stored config may only name "
            f"nn.Module subclasses or dataclasses defined under {' / '.join(COMPONENT_PACKAGES)}, "
            "or functions marked @component)",
        )


def component(fn: F) -> F:
    """Mark a factory function as a config component that stored configs may name.

    Only for factories that build a module from their arguments and write nothing to disk.
    Also marks a user's own class or function (`component_packages`): outside the project
    packages only what carries this mark itself (not inherited) may be named.
    """
    setattr(fn, COMPONENT_MARK, True)
    return fn


def iter_targets(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every `_target_` in nested dicts and lists, e.g. `net.encoder._target_`."""
    if isinstance(cfg, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), k, v) for k, v in cfg.items())
    elif isinstance(cfg, list | tuple):
        items = ((f"{prefix}[{i}]", i, v) for i, v in enumerate(cfg))
    else:
        return
    for path, key, value in items:
        if key == "_target_":
            yield path, value
        else:
            yield from iter_targets(value, path)


def iter_strings(cfg: Any, prefix: str = "") -> Iterator[tuple[str, str, bool]]:
    """(key path, text, is_key) of every string key and string value in nested dicts and lists;
    a container reached twice (a YAML alias) is walked once."""
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(prefix, cfg)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            yield path, node, False
            continue
        if not isinstance(node, dict | list | tuple) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for k, v in node.items():
                child = f"{path}.{k}" if path else str(k)
                if isinstance(k, str):
                    yield child, k, True
                stack.append((child, v))
        else:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))


def interpolation_refusal(text: str, resolvers: Collection[str] | None = None) -> str | None:
    """Why `text` may not stand in a config read from disk (None: it may).

    `resolvers` None: no interpolation at all (a config that is built as it is stored, such
    as an export's). Otherwise references to other keys and calls to the named resolvers pass;
    any other resolver, or a resolver whose name is itself computed, is refused.
    """
    if INTERPOLATION not in text:
        return None
    if resolvers is None:
        return (
            f"holds {INTERPOLATION!r}, which would be resolved as an OmegaConf interpolation "
            "when the config is built (a stored config is plain data)"
        )
    try:
        tree = grammar_parser.parse(text)
    except GrammarParseError as e:
        return f"not a valid interpolation ({e})"
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            name = node.resolverName().getText()
            if INTERPOLATION in name:
                return f"calls a resolver whose name is computed ({name!r})"
            if name not in resolvers:
                return (
                    f"calls the resolver {name!r}; a config read from disk may only call "
                    f"{', '.join(sorted(resolvers))} and reference its own keys"
                )
        stack.extend(getattr(node, "children", None) or [])
    return None


def check_interpolations(cfg: Any, where: str, resolvers: Collection[str] | None = None) -> None:
    """Raise `StoredConfigError` naming the key unless every string in `cfg` (plain containers)
    passes `interpolation_refusal(text, resolvers)`; keys may hold no interpolation at all."""
    for key, text, is_key in iter_strings(cfg):
        reason = interpolation_refusal(text, None if is_key else resolvers)
        if reason:
            raise StoredConfigError(where, f"{'key ' if is_key else ''}{key}", reason)


def read_yaml(path: str | Path) -> Any:
    """A YAML file as plain data (yaml.safe_load: no tags, nothing resolved); a file that
    cannot be read or parsed raises `StoredConfigError` naming it."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise StoredConfigError(str(path), "the file", f"cannot be read as YAML ({e})") from e


def resolve_stored(
    raw: Any, where: str, keys: Collection[str], resolvers: Collection[str] = SAFE_RESOLVERS
) -> dict[str, Any]:
    """{key: plain container} of the dotted `keys` of a config read from disk (`raw`, from
    `read_yaml`), each resolved exactly once, then checked by `check_targets`.

    Every string of the file is checked first (`check_interpolations` with `resolvers`), since
    a reference from a selected key may reach any other; a string still holding `${` after
    the one resolution (an escaped `\\${...}`) is refused, as Hydra would resolve it again.
    """
    if not isinstance(raw, dict):
        raise StoredConfigError(where, "the file", "is not a mapping")
    check_interpolations(raw, where, resolvers)
    try:
        cfg = OmegaConf.create(raw)
    except OmegaConfBaseException as e:
        raise StoredConfigError(where, "the file", f"is not a valid config ({e})") from e
    out: dict[str, Any] = {}
    for key in keys:
        try:
            node = OmegaConf.select(cfg, key, throw_on_missing=True)
            value = (
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
                if isinstance(node, DictConfig | ListConfig)
                else node
            )
        except OmegaConfBaseException as e:
            raise StoredConfigError(where, key, f"cannot be resolved ({e})") from e
        if value is None:
            raise StoredConfigError(where, key, "is missing")
        out[key] = value
    nested: dict[str, Any] = {}
    for key, value in out.items():
        *parents, last = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    check_targets(nested, where)
    return out


def check_targets(cfg: Any, where: str, packages: tuple[str, ...] | None = None) -> None:
    """Raise `StoredConfigError` unless `cfg` (plain containers from yaml.safe_load, or an
    OmegaConf config, taken as it is: nothing is resolved here) is fully resolved data, i.e.
    holds `${` in no key or value, and every `_target_` in it names an allowed component
    (else `UnsafeTargetError`); `where` names the config in the message (a file path);
    `packages` default: `component_packages()`.

    Every name is checked as a string first, so nothing is imported for a config that names
    anything outside `packages`.
    """
    try:
        packages = component_packages() if packages is None else packages
    except ComponentPackagesError as e:  # refused like a bad target: every caller reports it
        raise UnsafeTargetError(where, f"${USER_PACKAGES_ENV}", e.value, str(e)) from e
    if isinstance(cfg, DictConfig | ListConfig):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    check_interpolations(cfg, where, None)
    found = list(iter_targets(cfg))
    for key, target in found:
        if not isinstance(target, str) or not _inside(target, packages):
            reason = (
                "not a dotted name"
                if not isinstance(target, str)
                else f"outside the component packages {', '.join(packages)}; a class of your "
                f"own: mark it @component and name its package in ${USER_PACKAGES_ENV}"
            )
            raise UnsafeTargetError(where, key, target, reason)
    for key, target in found:
        refusal = _refusal(target, packages)
        if refusal:
            raise UnsafeTargetError(where, key, target, refusal)


def _inside(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def _refusal(target: str, packages: tuple[str, ...]) -> str | None:
    """Why `target` is not an allowed component (None: it is one)."""
    try:
        obj = _resolve(target, packages)
    except (ImportError, AttributeError, ValueError) as e:
        return f"does not resolve inside the project ({type(e).__name__}: {e})"
    if inspect.ismodule(obj):
        return "a module, not a component"
    module = getattr(obj, "__module__", None) or ""
    if not _inside(module, packages):  # e.g. a module's re-exported `shutil.rmtree`
        return f"resolves to {obj!r} from {module or 'nowhere'!r}"
    if not _inside(module, COMPONENT_PACKAGES):  # a user's package: what its author marked
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and _marked_itself(obj):
            return None
        return "not marked @component (a user's component must carry the mark itself)"
    if inspect.isclass(obj):
        # an nn.Module subclass has imported torch: reading it from sys.modules keeps configs
        # (bench.run, --help) from importing torch for a check that needs none
        torch_nn = sys.modules.get("torch.nn")
        is_module = torch_nn is not None and issubclass(obj, torch_nn.Module)
        if is_module or dataclasses.is_dataclass(obj):
            return None
        return "a class that is neither an nn.Module nor a dataclass"
    if inspect.isfunction(obj):
        if getattr(obj, COMPONENT_MARK, False) is True:
            return None
        return "a function not marked @component"
    return f"a {type(obj).__name__}, not a component"


def _resolve(target: str, packages: tuple[str, ...]) -> Any:
    """Import the longest module path of `target` inside `packages`, then walk attributes;
    stepping into another module through an attribute (a re-export) is refused."""
    parts = target.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError("not a dotted name")
    start = next(len(p.split(".")) for p in packages if _inside(target, (p,)))
    obj: Any = None
    n = 0
    for k in range(start, len(parts) + 1):
        name = ".".join(parts[:k])
        try:
            obj, n = importlib.import_module(name), k
        except ModuleNotFoundError as e:
            if e.name != name:
                raise  # a project module whose own imports fail
            break
    if obj is None:
        raise ImportError(f"no module {'.'.join(parts[:start])!r}")
    for attr in parts[n:]:
        obj = getattr(obj, attr)
        if inspect.ismodule(obj):
            raise ValueError(f"{attr!r} is the module {obj.__name__!r}")
    return obj


def _marked_itself(obj: Any) -> bool:
    """Whether `obj` carries the `@component` mark in its own namespace (a subclass of a
    marked class is not marked)."""
    return vars(obj).get(COMPONENT_MARK, False) is True


USER_PACKAGES_ENV = "AUDIOSCORE_COMPONENT_PACKAGES"


class ComponentPackagesError(UserError, ValueError):
    """$AUDIOSCORE_COMPONENT_PACKAGES holds something other than dotted package names."""

    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        super().__init__(reason)


def component_packages(user: str | None = None) -> tuple[str, ...]:
    """The packages a stored config may name: the project's (`COMPONENT_PACKAGES`) and the
    user's own, comma-separated dotted names (e.g. `my_models`) in `user`, by default
    $AUDIOSCORE_COMPONENT_PACKAGES.

    Naming a package only lets a stored config reach the classes and functions in it that
    carry `@component` themselves; a stored config can never add a package.
    """
    if user is None:
        user = os.environ.get(USER_PACKAGES_ENV, "")
    names = [n.strip() for n in user.split(",") if n.strip()]
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ComponentPackagesError(
                user,
                f"{name!r} is not a dotted package name (give comma-separated names such as "
                "my_models,lab.components)",
            )
    return tuple(dict.fromkeys((*COMPONENT_PACKAGES, *names)))
