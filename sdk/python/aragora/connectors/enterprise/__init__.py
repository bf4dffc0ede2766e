"""Enterprise connectors: :mod:`aragora.connectors.enterprise.database` (CDC database connectors)."""
