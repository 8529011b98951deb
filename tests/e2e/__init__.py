"""End to end: the real dashboard in a real tmux session."""
