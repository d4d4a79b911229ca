"""An operator's argument reference, read from its one source: the signature and the docstring.

The defaults come from ``__init__``'s signature, "templated" from ``template_fields`` (for the tuning
operator those come from the ``TuningSpec`` fields) and the meaning from the class docstring's
``:param name:`` entries. ``sparktune_docs`` renders the rows as a table; a unit test and the docs
build both refuse an argument without a ``:param`` entry, or an entry without an argument.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

_PARAM = re.compile(r"^:param\s+(\w+):\s*(.*)$")


@dataclass(frozen=True)
class Argument:
    name: str
    annotation: str
    default: str  # as Python source, or "required"
    templated: bool
    meaning: str  # reStructuredText from the docstring


def docstring_params(cls: type) -> dict[str, str]:
    """``:param name: text`` entries of the class docstring, continuation lines joined."""
    params: dict[str, str] = {}
    current: str | None = None
    for line in (inspect.getdoc(cls) or "").splitlines():
        match = _PARAM.match(line)
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current and line.startswith((" ", "\t")) and line.strip():
            params[current] += " " + line.strip()
        else:
            current = None
    return params


def signature_params(cls: type) -> list[inspect.Parameter]:
    """The operator's own arguments: ``__init__``'s named parameters, ``self`` and ``**kwargs`` left out."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return [p for p in params if p.name != "self" and p.kind in kinds]


def problems(cls: type) -> list[str]:
    """What keeps the reference from covering the arguments exactly once."""
    documented = docstring_params(cls)
    names = [p.name for p in signature_params(cls)]
    found = [
        f"{cls.__name__}: argument {n!r} has no ':param {n}:' in the docstring"
        for n in names
        if not documented.get(n)
    ]
    found += [
        f"{cls.__name__}: ':param {n}:' documents no argument of __init__"
        for n in documented
        if n not in names
    ]
    return found


def _default(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return "required"
    return repr(param.default)


def _annotation(param: inspect.Parameter) -> str:
    annotation: Any = param.annotation
    if annotation is inspect.Parameter.empty:
        return ""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def arguments(cls: type) -> list[Argument]:
    """One row per argument, in the signature's order."""
    documented = docstring_params(cls)
    templated = set(getattr(cls, "template_fields", ()))
    return [
        Argument(p.name, _annotation(p), _default(p), p.name in templated, documented.get(p.name, ""))
        for p in signature_params(cls)
    ]
