"""Hugging Face Hub access (listing, revisions, search, tokens) through ``huggingface_hub``.

The byte transfer itself lives in :mod:`tui.download`; this package never downloads files.
"""

from tui.hub.client import (
    HubClient,
    HubFile,
    HubSearchResult,
    RepoListing,
    hub_endpoint,
    hub_token,
)

__all__ = ["HubClient", "HubFile", "HubSearchResult", "RepoListing", "hub_endpoint", "hub_token"]
