"""Pure tests: no server, no SQLite file, no model backend."""
