"""The local platform: the servers `make up` starts, provisioning, storage housekeeping."""
