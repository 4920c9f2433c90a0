"""Plain helpers the integration and end-to-end tests share.

What makes a resource a test must give back (a database, a production profile, the platform,
a module's trained stack, the prediction service) is a fixture in ``tests/fixtures/``, so pytest
cleans it up whatever the test did. What stays here makes nothing to clean up, or is not called
by pytest at all, so it stays a plain function or value:

- ``governance.py``: ``MODEL``, ``WEAK_TUNING``, ``deep_merge`` and ``write_config`` -- values
  and a config file in a directory the caller already owns.
- ``platform.py``: ``free_port``, HTTP calls with the retries Prefect's own client makes, the
  ``Platform`` type the ``platform`` fixture yields, and the checks that ``down`` left nothing.
- ``serving.py``: the settings the service runs with, the ``Service`` type, ``shut_down`` (ends
  the in-process app mid-test) and ``live_traffic``, which a test starts and stops at moments
  of its own choosing, with arguments it picks then.
- ``stack.py``: ``wait_for``, ``stop_process`` (for processes a test starts itself) and
  ``read_like_get_online_features``.
- ``forking.py``: ``in_child``, the body of a forked process, which pytest never sees.
- ``serve_training.py``: a program, run as ``python -m tests.support.serve_training``.
"""
