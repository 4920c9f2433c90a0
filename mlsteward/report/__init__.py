"""The model card: collected from the registry and the audit trail, rendered as text or HTML."""
