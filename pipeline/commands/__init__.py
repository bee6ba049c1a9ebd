"""Sub-commands of ``diffda``: each module has ``register(subparsers)`` setting ``func``."""
