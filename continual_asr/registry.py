"""Strategies registered by name; a user's own strategy loads from ``path/to/file.py:Name``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import GENERAL_FIELDS, PRESETS, Options, RunConfig, build_fields, make_config
from .errors import ConfigError

# (model, config, options, *, device, plugins, evaluator, seed, base_data[, extraction_cache]) -> SpeechTemplate
StrategyFactory = Callable[..., object]


@dataclass
class NoOptions(Options):
    """The options of a strategy that has none of its own."""


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    description: str
    factory: StrategyFactory
    # The dataclass of the options this strategy reads beyond RunConfig's (option() fields; the
    # factory gets an instance as its third argument).
    options: type = NoOptions
    # It trains single-task adapters (knowledge extraction): its factory takes the runner's
    # extraction cache, and a sweep runs one such run per seed first so the others reuse them.
    extracts_adapters: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.options))

    def check_options(self, keys: Iterable[str]) -> None:
        """Refuse a field set by the user that is no field of this strategy's: another strategy's
        option (it would be silently ignored) or nobody's; one line naming the valid ones."""
        unknown = sorted(set(keys) - GENERAL_FIELDS - set(self.option_names))
        if not unknown:
            return
        if unknown[0] in strategy_options():
            raise ConfigError(f"config field '{unknown[0]}' is not an option of strategy '{self.name}' "
                              f"(its options: {', '.join(self.option_names) or 'none'})")
        refuse_unknown_fields(unknown, self.option_names)

    def settings(self, preset: str = "default", values: dict[str, Any] | None = None) -> tuple[RunConfig, Options]:
        """The general config and this strategy's options from a preset plus flat ``key=value``
        settings (--set, --config, a sweep file); a field that is not this strategy's is refused."""
        values = values or {}
        self.check_options(values)
        general = {k: v for k, v in values.items() if k in GENERAL_FIELDS}
        own = {k: v for k, v in values.items() if k not in GENERAL_FIELDS}
        return make_config(preset, general), build_fields(self.options, preset, own)

    def create(self, model, preset: str = "default", values: dict[str, Any] | None = None, **common) -> object:
        """The strategy (a SpeechTemplate) for ``model`` from a preset and flat settings, as the
        runner builds it (``common``: device, plugins, evaluator, seed, base_data, ...)."""
        config, options = self.settings(preset, values)
        return self.factory(model, config, options, **common)

    def defaults(self, preset: str = "default") -> dict[str, Any]:
        """Every field this strategy reads (RunConfig's and its options) with its default at
        ``preset`` (an unknown preset: the fields' own defaults)."""
        own = {f.name: f.default for cls in (RunConfig, self.options) for f in dataclasses.fields(cls)}
        return {**own, **{k: v for k, v in PRESETS.get(preset, {}).items() if k in own}}


_STRATEGIES: dict[str, StrategyInfo] = {}
# Strategy files loaded (path/to/file.py:Name): the module and what it registered.
_FILE_MODULES: dict[Path, tuple[object, list[StrategyInfo]]] = {}
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def register_strategy(name: str, description: str, options: type = NoOptions, extracts_adapters: bool = False
                      ) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make ``factory`` selectable as ``--strategy name``; ``options``: the dataclass
    of the options it reads beyond RunConfig's (a subclass of config.Options, fields made with
    config.option); ``extracts_adapters``: it trains one single-task adapter per task (its
    factory then takes ``extraction_cache``)."""
    if not _NAME.match(name):
        raise ValueError(f"strategy name {name!r} must be lowercase letters, digits and dashes")
    if not description.strip() or "\n" in description.strip():
        raise ValueError(f"strategy {name!r} needs a one-line description")
    if not (isinstance(options, type) and issubclass(options, Options)):
        raise ValueError(f"strategy {name!r}: options must be a dataclass deriving from config.Options")
    undocumented = [f.name for f in dataclasses.fields(options) if not f.metadata.get("help")]
    clashing = [f.name for f in dataclasses.fields(options) if f.name in GENERAL_FIELDS]
    if undocumented or clashing:
        raise ValueError(f"strategy {name!r}: options {undocumented + clashing} need option(...) help text and a "
                         "name that is no RunConfig field")

    def decorate(factory: StrategyFactory) -> StrategyFactory:
        existing = _STRATEGIES.get(name)
        if existing is not None and existing.factory is not factory:
            raise ValueError(f"strategy {name!r} is registered twice")
        _STRATEGIES[name] = StrategyInfo(name, description.strip(), factory, options, extracts_adapters)
        return factory

    return decorate


def strategy_options() -> set[str]:
    """Every config field some registered strategy declares as its option."""
    return {o for info in available_strategies().values() for o in info.option_names}


def all_fields() -> set[str]:
    """Every config field: RunConfig's and every registered strategy's options."""
    return set(GENERAL_FIELDS) | strategy_options()


def refuse_unknown_fields(keys: Iterable[str], also_valid: Iterable[str] = ()) -> None:
    """One line naming the first of ``keys`` that is no config field of any strategy (nor in
    ``also_valid``, a file strategy's options), and the valid ones."""
    valid = all_fields() | set(also_valid)
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise ConfigError(f"unknown config field '{unknown[0]}' (valid: {', '.join(sorted(valid))})")


def option_fields() -> dict[str, tuple[dataclasses.Field, dict[str, Any]]]:
    """Every registered option field, once, with the strategies that read it and each one's default
    (``casr fields``): a strategy may give a shared option a default of its own (the whole-model
    learning rate)."""
    found: dict[str, tuple[dataclasses.Field, dict[str, Any]]] = {}
    for info in available_strategies().values():
        for f in dataclasses.fields(info.options):
            found.setdefault(f.name, (f, {}))[1][info.name] = f.default
    return found


def _load_builtin() -> None:
    package = importlib.import_module("continual_asr.strategies")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"continual_asr.strategies.{module.name}")


def available_strategies() -> dict[str, StrategyInfo]:
    _load_builtin()
    return dict(sorted(_STRATEGIES.items()))


def _load_from_file(spec: str) -> StrategyInfo:
    file, _, attribute = spec.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"strategy file {path} not found")
    module, registered_there = _FILE_MODULES.get(path.resolve(), (None, []))
    if module is None:  # once per process: its register_strategy must not run twice
        _load_builtin()
        before = set(_STRATEGIES)
        module_spec = importlib.util.spec_from_file_location(f"casr_user_strategy_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        # What the file registered stays the file's: it is no built-in strategy, so `casr ls` and the
        # other strategies' option checks do not see it.
        registered_there = [_STRATEGIES.pop(name) for name in set(_STRATEGIES) - before]
        _FILE_MODULES[path.resolve()] = (module, registered_there)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigError(f"{path} has no attribute '{attribute}'")
    registered = next((info for info in registered_there if info.factory is factory), None)
    doc = (factory.__doc__ or attribute).strip().splitlines()[0]
    return StrategyInfo(f"{path.name}:{attribute}", registered.description if registered else doc, factory,
                        registered.options if registered else NoOptions,
                        registered.extracts_adapters if registered else False)


def get_strategy(name: str) -> StrategyInfo:
    if ":" in name and name.rpartition(":")[0].endswith(".py"):
        return _load_from_file(name)
    strategies = available_strategies()
    if name not in strategies:
        raise ConfigError(f"unknown strategy '{name}' (valid: {', '.join(strategies)}; or path/to/file.py:Name)")
    return strategies[name]
