"""Strategies registered by name; a user's own strategy loads from ``path/to/file.py:Name``."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .config import field_help
from .errors import ConfigError

# (model, config, *, device, plugins, evaluator, seed, base_data[, extraction_cache]) -> SpeechTemplate
StrategyFactory = Callable[..., object]


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    description: str
    factory: StrategyFactory
    # The config fields this strategy reads beyond the model and batching ones (each documented
    # by its help text in RunConfig); None: unknown (a strategy from a user's file).
    options: tuple[str, ...] | None = None
    # It trains single-task adapters (knowledge extraction): its factory takes the runner's
    # extraction cache, and a sweep runs one such run per seed first so the others reuse them.
    extracts_adapters: bool = False

    def check_options(self, keys: Iterable[str]) -> None:
        """Refuse a field set by the user that is another strategy's option but not this one's
        (it would be silently ignored): one line naming this strategy's options."""
        if self.options is None:
            return
        foreign = sorted(set(keys) & (strategy_options() - set(self.options)))
        if foreign:
            valid = ", ".join(self.options) or "none"
            raise ConfigError(f"config field '{foreign[0]}' is not an option of strategy '{self.name}' "
                              f"(its options: {valid})")


_STRATEGIES: dict[str, StrategyInfo] = {}
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


def register_strategy(name: str, description: str, options: Iterable[str] = (), extracts_adapters: bool = False
                      ) -> Callable[[StrategyFactory], StrategyFactory]:
    """Decorator: make ``factory`` selectable as ``--strategy name``; ``options`` are the
    config fields it reads beyond the model and batching ones; ``extracts_adapters``: it trains
    one single-task adapter per task (its factory then takes ``extraction_cache``)."""
    if not _NAME.match(name):
        raise ValueError(f"strategy name {name!r} must be lowercase letters, digits and dashes")
    if not description.strip() or "\n" in description.strip():
        raise ValueError(f"strategy {name!r} needs a one-line description")
    options = tuple(options)
    undocumented = [o for o in options if o not in field_help()]
    if undocumented:
        raise ValueError(f"strategy {name!r}: options {undocumented} are no RunConfig fields (undocumented)")

    def decorate(factory: StrategyFactory) -> StrategyFactory:
        existing = _STRATEGIES.get(name)
        if existing is not None and existing.factory is not factory:
            raise ValueError(f"strategy {name!r} is registered twice")
        _STRATEGIES[name] = StrategyInfo(name, description.strip(), factory, options, extracts_adapters)
        return factory

    return decorate


def strategy_options() -> set[str]:
    """Every config field some registered strategy declares as its option."""
    return {o for info in available_strategies().values() for o in info.options or ()}


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
    module_spec = importlib.util.spec_from_file_location(f"casr_user_strategy_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigError(f"{path} has no attribute '{attribute}'")
    doc = (factory.__doc__ or attribute).strip().splitlines()[0]
    return StrategyInfo(f"{path.name}:{attribute}", doc, factory)


def get_strategy(name: str) -> StrategyInfo:
    if ":" in name and name.rpartition(":")[0].endswith(".py"):
        return _load_from_file(name)
    strategies = available_strategies()
    if name not in strategies:
        raise ConfigError(f"unknown strategy '{name}' (valid: {', '.join(strategies)}; or path/to/file.py:Name)")
    return strategies[name]
