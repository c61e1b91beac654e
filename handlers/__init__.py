"""Job handlers: the registry and the six built-in job types.

Importing this package registers the built-in types.
"""

# This folder is installed as `skiplock.handlers` (skiplock/handlers links here). Imported
# by its bare name (the repository's root on sys.path), it would load a second copy
# of every module, with its own engine, registry and settings: refuse at once.
if __name__ != "skiplock.handlers":
    raise ImportError(f"import skiplock.handlers, not {__name__}: the repository's "
                      "top-level folders are parts of the one package `skiplock`")

from skiplock.handlers.builtin import builtin_types  # importing it registers the built-in types
from skiplock.handlers.registry import (
    JobResult,
    Registration,
    get_handler,
    get_registration,
    handler,
    load_handler_modules,
    register_handler,
    registered_types,
    unregister_handler,
)

__all__ = [
    "JobResult",
    "Registration",
    "builtin_types",
    "get_handler",
    "get_registration",
    "handler",
    "load_handler_modules",
    "register_handler",
    "registered_types",
    "unregister_handler",
]
