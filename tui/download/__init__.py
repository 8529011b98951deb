"""Downloads: a persistent, resumable, verified job queue (no Textual import here).

Public API: :class:`~tui.download.service.DownloadService`,
:class:`~tui.download.sources.JobSpec`, :func:`~tui.download.sources.parse_source`,
:class:`~tui.download.progress.DownloadEvent`.
"""

from tui.download.progress import DownloadEvent, FileProgress
from tui.download.sources import JobSpec, parse_source

__all__ = ["DownloadEvent", "FileProgress", "JobSpec", "parse_source"]
