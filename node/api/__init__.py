"""The node's gRPC API, one module per family of requests (Redpanda's kafka/server/handlers/).

Each handler decodes a request (node/validate.py first), calls the broker, a partition, the
controller or the consumer-group coordinator, where the policy lives, and encodes the answer.
`node/service.py` is the servicer: a table that routes each RPC to its handler here, inside the
one place where a BrokerError becomes a gRPC status and the request is counted in the metrics.

    produce.py     Produce: one request's work (propose, then wait for its acks)
    produce_stream.py  ProduceStream: many Produce requests on one call, answered as they end
    fetch.py       Fetch, FetchStream, ListOffsets, PartitionLag
    metadata.py    Metadata, DescribeTopics
    admin.py       CreateTopics, AlterConfigs, DeleteTopics (run on the controller leader)
    producers.py   InitProducerId
    groups.py      FindCoordinator, GroupHeartbeat, LeaveGroup, CommitOffsets, FetchOffsets,
                   ListGroups, DescribeGroup (consumer groups)
    replicas.py    DescribeReplica, ReplicaState (one replica's view; debugging)
"""
