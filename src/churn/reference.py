"""The docs' reference pages, generated from the code so they cannot drift: every key of
the params model (type, default, rule, description) and every command's `--help`.

docs/hooks.py calls these while `mkdocs build` renders the pages that ask for them.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _type_name(annotation: Any) -> str:
    """A short, readable type: `int`, `float | auto`, `hist_gb | random_forest | …`."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(annotation))
    if origin is Annotated:  # a validated str inside `X | None`, e.g. as_of
        return _type_name(get_args(annotation)[0])
    if origin is not None and get_args(annotation):
        inner = ", ".join(_type_name(a) for a in get_args(annotation))
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _rule(field: FieldInfo) -> str:
    """The numeric bounds pydantic enforces on a field, e.g. `≥ 0, ≤ 1`."""
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    rules = []
    for item in field.metadata:
        for attr, sign in signs.items():
            value = getattr(item, attr, None)
            if value is not None:
                rules.append(f"{sign} {value}")
    return ", ".join(rules)


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
        return "see below"
    return "`" + json.dumps(value, default=str) + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def params_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, rule, description) for every leaf key, depth first."""
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_model(field.annotation):
            rows.extend(params_rows(field.annotation, f"{key}."))
            continue
        meaning = field.description or (model.__doc__ or "").strip().split("\n")[0]
        rows.append((key, _type_name(field.annotation), _default(field), _rule(field), meaning))
    return rows


def params_reference() -> str:
    """Markdown tables of params.yaml: the top-level keys, then one table per section."""
    from churn.params import GateRule, Params

    sections: dict[str, list[tuple[str, ...]]] = {}
    for row in params_rows(Params):
        section = row[0].split(".")[0] if "." in row[0] else ""
        sections.setdefault(section, []).append(row)
    out = []
    for section, rows in sections.items():
        out.append(f"### `{section}`\n" if section else "### Top level\n")
        out.append("| key | type | default | rule | meaning |\n|---|---|---|---|---|")
        out.extend(f"| `{k}` | {t} | {_cell(d)} | {r} | {_cell(m)} |" for k, t, d, r, m in rows)
        out.append("")
    defaults = Params().gate.metrics
    out.append("### `gate.metrics.<metric>`\n")
    out.append("Each metric `churn gate` checks has these keys:\n")
    out.append("| key | type | default | rule | meaning |\n|---|---|---|---|---|")
    for k, t, d, r, m in params_rows(GateRule):
        out.append(f"| `{k}` | {t} | {_cell(d)} | {r} | {_cell(m)} |")
    out.append("\nThe default rules:\n")
    out.append("| metric | rule |\n|---|---|")
    for metric, rule in defaults.items():
        out.append(f"| `{metric}` | `{json.dumps(rule.model_dump(exclude_defaults=True))}` |")
    return "\n".join(out) + "\n"


def cli_reference() -> str:
    """Every `churn` command's `--help`, as a user sees it, under a heading of its own."""
    import typer

    from churn.cli import app

    out = []

    def walk(command: Any, path: list[str], parent: Any) -> None:
        # typer ships its own click: its command's context_class, not click.Context
        ctx = command.context_class(command, info_name=path[-1], parent=parent,
                                    terminal_width=88, max_content_width=88)  # fmt: skip
        level = "#" * min(len(path) + 1, 4)
        out.append(f"{level} `{' '.join(path)}`\n\n```text\n{command.get_help(ctx)}\n```\n")
        for name in getattr(command, "list_commands", lambda _: [])(ctx):
            walk(command.get_command(ctx, name), [*path, name], ctx)

    walk(typer.main.get_command(app), ["churn"], None)
    return "\n".join(out)
