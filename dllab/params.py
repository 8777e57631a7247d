"""The parameter schema of a scenario: one typed `Param` per key of its `[params]` table.

The schema is the single source of truth for a parameter's default, its type, its allowed
values (a range, or a closed set of choices) and its unit. It validates the TOML's `[params]`,
`[quick]` and control overrides when the file is read, parses `--set key=value` on the command
line, and is what `describe` shows. A value outside the schema is refused with one line that
names the key, the value and what is allowed, before any run folder exists.

In a scenario file:

    [params]
    epochs = { default = 30, min = 1, max = 10000, unit = "epochs", doc = "passes over the data" }
    learning_rate = { default = 1e-3, exclusive_min = 0.0, max = 1.0 }
    hidden = { default = [256, 256], min = 1, max = 4096, max_length = 8 }   # min/max per item
    env_id = { default = "CartPole-v1", kind = "gymnasium-id" }
    optimizer = { default = "adam", choices = ["adam", "sgd"] }
    double_dqn = false                                   # bools and free strings may be plain
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from dllab.errors import ScenarioFileError, UsageError

KINDS = ("gymnasium-id",)
_FIELDS = {"default", "min", "max", "exclusive_min", "exclusive_max", "choices", "unit", "doc",
           "kind", "max_length"}
_GYM_ID = re.compile(r"^[A-Za-z][\w-]*(/[A-Za-z][\w-]*)?-v\d+$")
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a JSON list"}


def _show(value: Any, limit: int = 60) -> str:
    """A value as it appears in a one-line error: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Param:
    """One parameter: its default, type, allowed values and unit."""

    name: str
    default: Any
    min: float | None = None
    max: float | None = None
    exclusive_min: float | None = None
    exclusive_max: float | None = None
    choices: tuple | None = None
    unit: str = ""
    doc: str = ""
    kind: str = ""
    max_length: int | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def numeric(self) -> bool:
        """Numbers, and lists of numbers (whose items the range applies to)."""
        if self.type is list:
            return all(_is_number(item) for item in self.default)
        return _is_number(self.default)

    @property
    def bounded(self) -> bool:
        """Whether a numeric parameter has both a lower and an upper limit."""
        has_low = self.min is not None or self.exclusive_min is not None
        has_high = self.max is not None or self.exclusive_max is not None
        lengths_ok = self.type is not list or self.max_length is not None
        return has_low and has_high and lengths_ok

    def allowed(self) -> str:
        """The allowed values in words: "an integer in [1, 10000]", "one of adam, sgd"."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "gymnasium-id":
            return "a registered Gymnasium id such as CartPole-v1 (no module: prefix)"
        low = f"[{self.min:g}" if self.min is not None else (
            f"({self.exclusive_min:g}" if self.exclusive_min is not None else "(-inf")
        high = f"{self.max:g}]" if self.max is not None else (
            f"{self.exclusive_max:g})" if self.exclusive_max is not None else "inf)")
        item = "integer" if self._item_type() is int else "finite number"
        if self.type is list:
            length = f" of at most {self.max_length} items" if self.max_length is not None else ""
            return f"a JSON list{length}, each an {item} in {low}, {high}"
        return f"{'an' if item == 'integer' else 'a'} {item} in {low}, {high}"

    def _item_type(self) -> type:
        if self.type is list:
            return int if all(isinstance(v, int) for v in self.default) else float
        return self.type

    def check(self, value: Any, where: str) -> Any:
        """`value` if it is allowed (an int is accepted for a float), else a UsageError naming
        the key, the value and the allowed values."""
        value = self._check_type(value, where)
        problem = self._problem(value)
        if problem:
            unit = f" {self.unit}" if self.unit else ""
            raise UsageError(f"{where}: {_show(value)} is {problem}; allowed: {self.allowed()}{unit}")
        return value

    def _check_type(self, value: Any, where: str) -> Any:
        kind = self.type
        if kind is float and _is_number(value):
            return float(value)
        if kind is list and isinstance(value, list):
            item_type = self._item_type()
            if self.numeric and not all(
                _is_number(v) and (item_type is float or isinstance(v, int)) for v in value
            ):
                items = "integers" if item_type is int else "numbers"
                raise UsageError(f"{where}: {_show(value)} must be a list of {items}; allowed: {self.allowed()}")
            return [float(v) if item_type is float else v for v in value]
        if type(value) is kind:
            return value
        raise UsageError(f"{where}: expected {_TYPE_NAMES.get(kind, kind.__name__)} "
                         f"({kind.__name__}), got {_show(value)}")

    def _problem(self, value: Any) -> str:
        if self.choices is not None and value not in self.choices:
            return "not one of the choices"
        if self.kind == "gymnasium-id" and (":" in value or not _GYM_ID.match(value)):
            return "not a Gymnasium id"
        if self.type is list:
            if self.max_length is not None and len(value) > self.max_length:
                return f"longer than {self.max_length} items"
            if not value and self.default:
                return "empty"
            return next((self._number_problem(v) for v in value if self._number_problem(v)), "")
        return self._number_problem(value) if _is_number(value) else ""

    def _number_problem(self, value: Any) -> str:
        if not _is_number(value):
            return ""
        if isinstance(value, float) and not math.isfinite(value):
            return "not finite"
        if self.min is not None and value < self.min:
            return "below the minimum"
        if self.exclusive_min is not None and value <= self.exclusive_min:
            return "not above the lower limit"
        if self.max is not None and value > self.max:
            return "above the maximum"
        if self.exclusive_max is not None and value >= self.exclusive_max:
            return "not below the upper limit"
        return ""

    def check_for_run(self, value: Any, where: str) -> Any:
        """`check`, plus what needs an import: a Gymnasium id must be registered."""
        value = self.check(value, where)
        if self.kind == "gymnasium-id":
            problem = _gymnasium_problem(value)
            if problem:
                raise UsageError(f"{where}: {_show(value)} is {problem}; allowed: {self.allowed()}")
        return value

    def parse(self, text: str, where: str) -> Any:
        """Turn the text of `--set key=text` into a checked value of this parameter's type."""
        kind = self.type
        try:
            if kind is bool:
                lowered = text.lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = lowered in ("true", "1", "yes")
            elif kind is int:
                value = int(text)
            elif kind is float:
                value = float(text)
            elif kind is list:
                value = json.loads(text)
                if not isinstance(value, list):
                    raise ValueError
            else:
                value = text
        except (ValueError, RecursionError):
            raise UsageError(f"{where}: expected {_TYPE_NAMES[kind]} ({kind.__name__}), "
                             f"got {_show(text)}") from None
        return self.check(value, where)

    def describe(self) -> str:
        """One line for `describe`: default, allowed values, unit, doc."""
        allowed = "" if self.type is bool or (self.type is str and not self.choices and not self.kind) \
            else f"  ({self.allowed()}{' ' + self.unit if self.unit else ''})"
        doc = f"  {self.doc}" if self.doc else ""
        return f"{self.name} = {self.default!r}{allowed}{doc}"


def _gymnasium_problem(value: str) -> str:
    """Registered Gymnasium ids only: a `module:Env` id would make Gymnasium import a module.
    (Asked at run time only: reading a scenario file must not import Gymnasium.)"""
    try:
        import gymnasium
    except ImportError:  # the scenario's own requirement check names the extra to install
        return ""
    if value not in gymnasium.envs.registry:
        return "not registered in Gymnasium"
    return ""


def parse_param(name: str, raw: Any, where: str) -> Param:
    """One `[params]` entry (a plain value, or a table with `default` and limits) as a Param."""
    if not isinstance(raw, dict):
        if isinstance(raw, list) and raw and not all(_is_number(v) for v in raw):
            raise ScenarioFileError(f"{where}: a list parameter must hold numbers")
        return Param(name=name, default=raw)
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ScenarioFileError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(sorted(_FIELDS))})")
    if "default" not in raw:
        raise ScenarioFileError(f"{where}: missing required field 'default'")
    limits = {}
    for key in ("min", "max", "exclusive_min", "exclusive_max"):
        if key in raw:
            if not _is_number(raw[key]) or not math.isfinite(raw[key]):
                raise ScenarioFileError(f"{where}: field '{key}' must be a finite number")
            limits[key] = raw[key]
    choices = raw.get("choices")
    if choices is not None and (not isinstance(choices, list) or not choices):
        raise ScenarioFileError(f"{where}: field 'choices' must be a non-empty list")
    kind = raw.get("kind", "")
    if kind and kind not in KINDS:
        raise ScenarioFileError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}")
    max_length = raw.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 0):
        raise ScenarioFileError(f"{where}: field 'max_length' must be a non-negative integer")
    for key in ("unit", "doc"):
        if not isinstance(raw.get(key, ""), str):
            raise ScenarioFileError(f"{where}: field '{key}' must be a string")
    param = Param(name=name, default=raw["default"], choices=tuple(choices) if choices else None,
                  unit=raw.get("unit", ""), doc=raw.get("doc", ""), kind=kind,
                  max_length=max_length, **limits)
    if isinstance(param.default, dict):
        raise ScenarioFileError(f"{where}: field 'default' must be a value, not a table")
    if (limits or max_length is not None) and not param.numeric:
        raise ScenarioFileError(f"{where}: limits apply to numbers or lists of numbers only")
    try:
        param.check(param.default, where)
    except UsageError as error:
        raise ScenarioFileError(f"{where}: the default is not allowed by its own schema ({error})") from None
    return param


def parse_schema(raw: dict, where: str) -> dict[str, Param]:
    """The whole `[params]` table."""
    return {name: parse_param(name, value, f"{where}: field 'params.{name}'") for name, value in raw.items()}


def check_values(schema: dict[str, Param], values: dict, where: str) -> dict[str, Any]:
    """Validate a table of overrides (`[quick]`, a control's `set`) against the schema, as a
    ScenarioFileError naming the file and the field."""
    checked = {}
    for key, value in values.items():
        if key not in schema:
            raise ScenarioFileError(f"{where}.{key}': overrides no key of [params]")
        try:
            checked[key] = schema[key].check(value, f"{where}.{key}'")
        except UsageError as error:
            raise ScenarioFileError(str(error)) from None
    return checked
