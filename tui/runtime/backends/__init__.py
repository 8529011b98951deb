"""Backends: llama-cpp-python (GGUF), transformers (safetensors), OpenAI-compatible HTTP.

Each backend module imports its heavy library only inside its methods, and the service imports
the module itself only when that backend is first used.
"""
