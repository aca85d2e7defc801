"""One module per Kafka API: decode (kio did), call the broker, encode (kio will).

Each module exports `API`, its key, name, the versions served and the handler; this table is
what ApiVersions advertises and what the listener routes by.
"""

from __future__ import annotations

from node.kafka.handlers import (
    api_versions,
    create_partitions,
    create_topics,
    delete_groups,
    delete_topics,
    describe_cluster,
    describe_configs,
    describe_groups,
    fetch,
    find_coordinator,
    heartbeat,
    incremental_alter_configs,
    init_producer_id,
    join_group,
    leave_group,
    list_groups,
    list_offsets,
    metadata,
    offset_commit,
    offset_fetch,
    offset_for_leader_epoch,
    produce,
    sync_group,
)
from node.kafka.wire import Api

APIS: dict[int, Api] = {
    m.API.key: m.API
    for m in (
        api_versions,
        create_partitions,
        create_topics,
        delete_groups,
        delete_topics,
        describe_cluster,
        describe_configs,
        describe_groups,
        fetch,
        find_coordinator,
        heartbeat,
        incremental_alter_configs,
        init_producer_id,
        join_group,
        leave_group,
        list_groups,
        list_offsets,
        metadata,
        offset_commit,
        offset_fetch,
        offset_for_leader_epoch,
        produce,
        sync_group,
    )
}
