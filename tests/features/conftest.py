"""The pool tests' fixtures (real `skiplock worker` processes), for the feature tests."""

from tests.pool.conftest import jobs, pool_engine, start_pool  # noqa: F401

FEATURE_HANDLERS = "tests.features.handlers"
