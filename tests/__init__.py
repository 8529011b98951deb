"""ModelDeck's tests, in tiers: ``unit``, ``integration``, ``tui``, ``e2e``, ``adversarial``.

Shared helpers live in :mod:`tests.support` (and the fake Hub in :mod:`tests.fakehub`); the
fixtures are registered once in ``tests/conftest.py``.
"""
