"""The pool tests' fixtures (real `skiplock worker` processes), for the application tests."""

from tests.pool.conftest import jobs, pool_engine, start_pool  # noqa: F401
