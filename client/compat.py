"""aiokafka's class names over liferaft's clients, so a service written for aiokafka runs after
changing its imports and its bootstrap address (docs/client.md; tests/client/test_aiokafka_port.py
runs one both ways):

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    # becomes
    from client import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

AIOKafkaProducer is Producer (its constructor is keyword-only, as aiokafka's). AIOKafkaConsumer
is Consumer with aiokafka's constructor: the topics to subscribe to first, everything else by
keyword; liferaft's Consumer takes the bootstrap address first instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from client.admin import AdminClient
from client.consumer import Consumer
from client.errors import LiferaftError
from client.producer import Producer

__all__ = ["AIOKafkaAdminClient", "AIOKafkaConsumer", "AIOKafkaProducer", "KafkaError"]

AIOKafkaProducer = Producer
AIOKafkaAdminClient = AdminClient
KafkaError = LiferaftError
"""aiokafka's base error: every error the client raises about the cluster is one."""


class AIOKafkaConsumer(Consumer):
    """Consumer with aiokafka's constructor: AIOKafkaConsumer(*topics, bootstrap_servers=...,
    group_id=..., ...). Topics given here are subscribed to at start(), as in aiokafka."""

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Iterable[str] = "localhost",
        **settings: Any,
    ) -> None:
        super().__init__(bootstrap_servers=bootstrap_servers, **settings)
        if topics:
            self.subscribe(topics=list(topics))
