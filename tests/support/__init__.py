"""Helpers shared by every test tier and the benchmarks (plain modules, no fixtures).

* :mod:`.gguf` – the one GGUF writer (``write_gguf_file``), the builders on top of it and
  raw byte builders for hostile files;
* :mod:`.safetensors` – safetensors model folders;
* :mod:`.tiny_models` – tiny loadable llama.cpp / transformers models;
* :mod:`.runtime` – a :class:`~tui.runtime.service.RuntimeService` on a throwaway inventory;
* :mod:`.serve` – a real ``modeldeck serve`` on 127.0.0.1 in a thread of the test's process;
* :mod:`.app` – deterministic dashboard set-ups;
* :mod:`.nvml` – a ``pynvml`` look-alike;
* :mod:`.checks` – tree digests and one-line CLI error checks.
"""
