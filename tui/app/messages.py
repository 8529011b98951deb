"""App-level messages posted by workers and wiring adapters; handlers in the App update widgets.

Widget-specific messages are nested in their widgets (``ModelTable.DeleteRequested``,
``DownloadsPanel.ActionRequested``, ``PromptConsole.Submitted`` …). Messages that arrive often
implement ``can_replace`` so a newer one replaces an unprocessed older one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from tui.app.views import JobView, ModelRow
    from tui.resources.types import Snapshot
    from tui.runtime.types import RuntimeEvent


class ModelsLoaded(Message):
    """The full set of table rows (startup, or after an inventory change), with the catalog
    entries by id when they were read too (quant sizes for the pickers)."""

    def __init__(self, rows: Sequence[ModelRow], entries: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.rows = rows
        self.entries = entries


class RowsChanged(Message):
    """The Fit verdicts of some rows were (re)computed: update those cells in place."""

    def __init__(self, rows: Sequence[ModelRow]) -> None:
        super().__init__()
        self.rows = rows


class ResourcesSampled(Message):
    """A resource snapshot and the sparkline histories; a newer one replaces an older one."""

    def __init__(self, snapshot: Snapshot, history: Mapping[str, Sequence[float]]) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.history = history

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ResourcesSampled)


class JobUpdated(Message):
    """A download job changed; a newer update of the same job replaces an unprocessed one
    unless the state changed (state transitions are never dropped)."""

    def __init__(self, view: JobView) -> None:
        super().__init__()
        self.view = view

    def can_replace(self, message: Message) -> bool:
        return (
            isinstance(message, JobUpdated)
            and message.view.job_id == self.view.job_id
            and message.view.state == self.view.state
        )


class ModelDeleted(Message):
    """A model was removed from disk and inventory (``kept``: paths left alone, and why)."""

    def __init__(self, name: str, freed_bytes: int, kept: list[str] | None = None) -> None:
        super().__init__()
        self.name = name
        self.freed_bytes = freed_bytes
        self.kept = kept or []


class RuntimeChanged(Message):
    """A model's runtime state changed (loading, loaded, unloading, unloaded, failed)."""

    def __init__(self, event: RuntimeEvent) -> None:
        super().__init__()
        self.event = event


class LoadRefused(Message):
    """The fit check refused a load; the App asks whether to force it."""

    def __init__(self, row: ModelRow, reason: str) -> None:
        super().__init__()
        self.row = row
        self.reason = reason


class DeletePlanned(Message):
    """What deleting a model deletes and frees, ready for the confirmation."""

    def __init__(
        self, row: ModelRow, freed_bytes: int, forget_only: bool, lines: list[str] | None = None
    ) -> None:
        super().__init__()
        self.row = row
        self.freed_bytes = freed_bytes
        self.forget_only = forget_only
        self.lines = lines or []


class JobRemoved(Message):
    """A job's record was deleted (by this or another process): drop its row."""

    def __init__(self, job_id: str) -> None:
        super().__init__()
        self.job_id = job_id


class InventoryChanged(Message):
    """Installed models or custom entries changed (any process): read the rows again. A newer
    one replaces an unprocessed one."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, InventoryChanged)


class LiveProblem(Message):
    """Lines to show once: files discovery could not register, or the change feed stopped."""

    def __init__(self, lines: list[str], severity: str = "warning") -> None:
        super().__init__()
        self.lines = lines
        self.severity = severity
