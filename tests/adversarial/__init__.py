"""The adversarial tier: hostile servers, files, databases and file systems, used for real."""
