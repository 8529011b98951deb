"""CivitAI as a download source: its public REST API (:mod:`tui.civitai.client`)."""
