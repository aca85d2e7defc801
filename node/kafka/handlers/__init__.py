"""One module per Kafka API: decode (kio did), call the broker, encode (kio will).

Each module exports `API`, its key, name, the versions served and the handler; this table is
what ApiVersions advertises and what the listener routes by.
"""

from __future__ import annotations

from importlib import import_module

from node.kafka.wire import Api

HANDLERS = (
    "alter_partition_reassignments",
    "alter_user_scram_credentials",
    "api_versions",
    "create_acls",
    "create_partitions",
    "create_topics",
    "delete_acls",
    "delete_groups",
    "delete_records",
    "delete_topics",
    "describe_acls",
    "describe_cluster",
    "describe_configs",
    "describe_groups",
    "describe_user_scram_credentials",
    "fetch",
    "find_coordinator",
    "heartbeat",
    "incremental_alter_configs",
    "init_producer_id",
    "join_group",
    "leave_group",
    "list_groups",
    "list_offsets",
    "list_partition_reassignments",
    "metadata",
    "offset_commit",
    "offset_fetch",
    "offset_for_leader_epoch",
    "produce",
    "sasl_authenticate",
    "sasl_handshake",
    "sync_group",
)
"""The handler modules, by name: one list, so an API is served by adding its module here."""

APIS: dict[int, Api] = {
    api.key: api for api in (import_module(f"{__name__}.{name}").API for name in HANDLERS)
}
