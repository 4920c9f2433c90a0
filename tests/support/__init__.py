"""Helpers the integration and end-to-end tests share: ports, services, configs, profiles."""
