"""Connectors run in-process by the ``aragora`` binary (see :mod:`aragora.connectors.enterprise.database`)."""
