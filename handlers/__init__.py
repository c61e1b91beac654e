"""Job handlers: the registry and the six built-in job types.

Importing this package registers the built-in types.
"""

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
