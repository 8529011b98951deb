"""App-level messages posted by workers and wiring adapters; handlers in the App update widgets.

Widget-specific messages are nested in their widgets (``ModelTable.DeleteRequested``,
``DownloadsPanel.JobChanged``, ``PromptConsole.Submitted`` …). Messages are dataclasses;
those that arrive often implement ``can_replace`` so a newer one replaces an unprocessed
older one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from tui.app.views import ModelRow
    from tui.resources.types import Snapshot
    from tui.runtime.types import RuntimeEvent


@dataclass
class ModelsLoaded(Message):
    """The full set of table rows (startup, or after an inventory change), with the catalog
    entries by id when they were read too (quant sizes for the pickers)."""

    rows: Sequence[ModelRow]
    entries: Mapping[str, Any] | None = None


@dataclass
class RowsChanged(Message):
    """The Fit verdicts of some rows were (re)computed: update those cells in place."""

    rows: Sequence[ModelRow]


@dataclass
class ResourcesSampled(Message):
    """A resource snapshot and the sparkline histories; a newer one replaces an older one."""

    snapshot: Snapshot
    history: Mapping[str, Sequence[float]]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ResourcesSampled)


@dataclass
class ModelDeleted(Message):
    """A model was removed from disk and inventory (``kept``: paths left alone, and why)."""

    name: str
    freed_bytes: int
    kept: list[str] = field(default_factory=list)


@dataclass
class RuntimeChanged(Message):
    """A model's runtime state changed (loading, loaded, unloading, unloaded, failed)."""

    event: RuntimeEvent


@dataclass
class LoadRefused(Message):
    """The fit check refused a load; the App asks whether to force it."""

    row: ModelRow
    reason: str


@dataclass
class ModelBusy(Message):
    """The runtime refused to unload (``row`` None) or to make room for loading ``row``:
    other clients' answers would be cut off. The App asks whether to stop them."""

    model_id: str
    reason: str
    row: ModelRow | None = None


@dataclass
class DeletePlanned(Message):
    """What deleting a model deletes and frees, ready for the confirmation."""

    row: ModelRow
    freed_bytes: int
    forget_only: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class InventoryChanged(Message):
    """Installed models or custom entries changed (any process): read the rows again. A newer
    one replaces an unprocessed one."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, InventoryChanged)


@dataclass
class LiveProblem(Message):
    """Lines to show once: files discovery could not register, or the change feed stopped."""

    lines: list[str]
    severity: str = "warning"
