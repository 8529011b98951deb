"""Services for real: the fake Hub, SQLite, llama.cpp / transformers / OpenAI backends, the CLI."""
