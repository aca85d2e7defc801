"""liferaft's Python client: producer, consumer and admin, asyncio first, with a blocking facade.

    from client import Producer, Consumer, AdminClient          # asyncio
    from client import SyncProducer, SyncConsumer, SyncAdminClient  # scripts

Everything public is re-exported here; the submodules are implementation detail. The client
depends on the wire contract (liferaft_proto) only, never on the node's code.
"""

from client.admin import (
    AdminClient,
    ClusterDescription,
    ConfigValue,
    CreatedTopic,
    NewTopic,
    TopicDescription,
)
from client.cluster import ClientConfig
from client.consumer import AutoOffsetReset, Consumer
from client.errors import (
    BrokerNotAvailableError,
    BrokerUnavailableError,
    CorruptMessageError,
    DeliveryTimeoutError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidRecordError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    InvalidRequiredAcksError,
    InvalidTopicError,
    LeaderNotAvailableError,
    LiferaftError,
    MessageTooLargeError,
    NotControllerError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderError,
    OffsetOutOfRangeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownServerError,
    UnknownTopicOrPartitionError,
    UnsupportedCompressionTypeError,
    UnsupportedVersionError,
)
from client.metadata import BrokerMetadata, PartitionMetadata, TopicMetadata
from client.offsets import OffsetSpec
from client.partitioner import DefaultPartitioner, Partitioner, murmur2
from client.producer import Producer
from client.sync import SyncAdminClient, SyncConsumer, SyncProducer
from client.types import ConsumerRecord, OffsetAndTimestamp, RecordMetadata, TopicPartition
from liferaft_proto.records import Record

__all__ = [
    "AdminClient",
    "AutoOffsetReset",
    "BrokerMetadata",
    "BrokerNotAvailableError",
    "BrokerUnavailableError",
    "ClientConfig",
    "ClusterDescription",
    "ConfigValue",
    "Consumer",
    "ConsumerRecord",
    "CorruptMessageError",
    "CreatedTopic",
    "DefaultPartitioner",
    "DeliveryTimeoutError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidReplicationFactorError",
    "InvalidRequestError",
    "InvalidRequiredAcksError",
    "InvalidTopicError",
    "LeaderNotAvailableError",
    "LiferaftError",
    "MessageTooLargeError",
    "NewTopic",
    "NotControllerError",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderError",
    "OffsetAndTimestamp",
    "OffsetOutOfRangeError",
    "OffsetSpec",
    "PartitionMetadata",
    "Partitioner",
    "Producer",
    "Record",
    "RecordMetadata",
    "RequestTimedOutError",
    "SyncAdminClient",
    "SyncConsumer",
    "SyncProducer",
    "TopicAlreadyExistsError",
    "TopicDescription",
    "TopicMetadata",
    "TopicPartition",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionTypeError",
    "UnsupportedVersionError",
    "murmur2",
]
