"""The Textual dashboard.

Importing this package does not import Textual: :mod:`tui.app.views` is plain Python; the App
lives in :mod:`tui.app.app`.
"""
