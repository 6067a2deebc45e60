"""Errors the CLI turns into one-line messages and a non-zero exit."""

from __future__ import annotations

from collections.abc import Sequence


class ChurnError(Exception):
    """An expected failure with a message meant for the user."""


class DataValidationError(ChurnError):
    """A table broke a rule of the data contract."""

    def __init__(
        self,
        file: str,
        column: str,
        rule: str,
        detail: str,
        ids: Sequence[object] = (),
        id_column: str = "user_id",
    ) -> None:
        self.file = file
        self.column = column
        self.rule = rule
        self.detail = detail
        self.ids = [str(i) for i in ids][:5]
        self.id_column = id_column
        message = f"{file}: column '{column}' breaks rule '{rule}': {detail}"
        if self.ids:
            message += f" (e.g. {id_column} {', '.join(self.ids)})"
        super().__init__(message)

    def __reduce__(self) -> tuple:
        """Rebuilt from its parts when it crosses a process (a dask worker's error)."""
        return type(self), (self.file, self.column, self.rule, self.detail, self.ids,
                            self.id_column)  # fmt: skip


class RegistryError(ChurnError):
    """A registry or model-store file that is not what it must be (churn.guarded)."""
