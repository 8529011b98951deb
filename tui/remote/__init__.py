"""Remote engines: OpenAI-compatible upstreams (vLLM, SGLang, llama-server, a gateway) that
ModelDeck lists and proxies by name. No Textual here.

:mod:`.registry` keeps the names (``remotes.toml`` in the state dir); :mod:`.models` fetches
and caches an upstream's model list; :mod:`.proxy` forwards ``modeldeck serve`` requests.
"""
