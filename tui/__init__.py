"""ModelDeck: a terminal dashboard for AI models on remote GPU machines.

Importing this package is cheap: it pulls in neither Textual nor any model runtime.
"""

__version__ = "0.1.0"
