"""The Kafka protocol listener: Kafka clients and tools (kcat, librdkafka, kafka-python,
aiokafka) talk to a liferaft node as they would to a Kafka broker (docs/kafka.md).

`server.py` owns the TCP listener and the framing; `wire.py` the request and response headers,
the version table and the helpers that build kio's per-version message types; `handlers/` has
one module per API that decodes nothing by hand: kio's generated types do the encoding, and each
handler calls the same partition, controller and group code the gRPC service calls.
"""
