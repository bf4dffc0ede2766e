"""The guide's in-process CDC database connectors.

    from aragora.connectors.enterprise.database import MySQLConnector
    from aragora.connectors.enterprise.database.cdc import CallbackHandler

    connector = MySQLConnector(host="localhost", port=3306, database="myapp", tables=["users", "orders"],
                               use_binlog=True, server_id=100,
                               credentials={"username": "cdc_user", "password": "secret"})
    connector.add_change_handler(CallbackHandler(on_change))
    await connector.start_binlog_cdc()
    async for row in connector.sync():
        print(row.evidence_id)
    await connector.stop_binlog_cdc()
    await connector.close()

The engine is the Rust ``aragora`` binary (``ARAGORA_BIN``, else ``aragora`` on ``PATH``): each
connector runs ``aragora cdc run`` and drives it over a JSON-lines protocol; the handlers run in
this process. Delivery is at least once; ``checkpoint_path=`` makes positions survive restarts.
See docs/cdc/python.md.
"""

from aragora._binary import BinaryNotFound

from .cdc import (CallbackHandler, CDCError, CDCSourceType, ChangeEvent, ChangeHandler, ChangeOperation,
                  CompositeHandler, ConfigError, KnowledgeMoundHandler, SyncRow)
from .connectors import (CDCConnector, MongoDBConnector, MySQLConnector, PostgreSQLConnector, SnowflakeConnector,
                         SQLServerConnector)

__all__ = [
    "CDCConnector", "MySQLConnector", "SQLServerConnector", "PostgreSQLConnector", "MongoDBConnector",
    "SnowflakeConnector", "ChangeEvent", "CDCSourceType", "ChangeOperation", "ChangeHandler", "CallbackHandler",
    "CompositeHandler", "KnowledgeMoundHandler", "SyncRow", "CDCError", "ConfigError", "BinaryNotFound",
]
