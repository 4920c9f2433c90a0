"""Features: the Feast repo built from config, training retrieval, online reads.

``store`` (repo config, ``get_store``, ``FeastAdapterError``), ``repo`` (the Feast objects
declared from a model's config, applied and read back; ``feature_repo/`` builds on it),
``retrieval`` (point-in-time training frames on DuckDB or PostgreSQL), ``online`` (the reader
serving and online scoring use), ``materialize`` (loading the online store), ``dtypes`` (one
pandas dtype per config dtype on every path), ``offline_store`` (the ASOF DuckDB offline store
Feast loads by name) and ``encoding``.
"""
