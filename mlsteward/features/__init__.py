"""Features: the Feast repo built from config, training retrieval, online reads."""
