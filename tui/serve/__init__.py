"""``modeldeck serve``: an OpenAI-compatible API and a model-management API over the services.

One process: the server shares the :class:`~tui.services.Services` (runtime, downloads,
inventory) of whoever starts it, the CLI (``modeldeck serve``) or the dashboard, so the console
is one more client of the same per-model schedulers.

Nothing here is imported unless something serves: FastAPI, Starlette, uvicorn, pydantic and
prometheus-client stay out of ``modeldeck ls`` and the dashboard's start-up. The modules that a
plain CLI command may import (:mod:`.state`, :mod:`.client`, :mod:`.auth`) import none of them.

* :mod:`.app` builds the ASGI app; :mod:`.openai_api` (``/v1``) and :mod:`.manage_api`
  (``/api``) hold the routes, :mod:`.schemas` the request bodies, :mod:`.sse` the lean
  streaming response, :mod:`.errors` the OpenAI error shape, :mod:`.metrics` ``/metrics``,
  :mod:`.validate` the id and keep-alive checks, :mod:`.context` what the routes share.
* :mod:`.server` runs uvicorn inside the caller's event loop (:func:`start_server`).
* :mod:`.state` is ``serve.json`` in the state dir (how ``modeldeck ps`` finds the server);
  :mod:`.client` is the CLI's client of a running server.
"""
