"""Configuration: model configs (YAML -> pydantic), profiles and where state lives."""
