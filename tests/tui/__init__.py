"""The Textual dashboard under Pilot, and its SVG snapshots."""
