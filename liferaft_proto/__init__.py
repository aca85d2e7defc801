"""liferaft's wire contract, shared by the node and the client.

- `liferaft_proto.v1`: stubs generated from proto/liferaft_proto/v1/*.proto by
  `python proto/generate.py` (never edit them by hand): `broker_pb2` / `broker_pb2_grpc` for the
  public Broker service, `raft_pb2` / `raft_pb2_grpc` for the internal Raft transport,
  `errors_pb2` for ErrorCode and ErrorDetail.
- `liferaft_proto.records`: the record batch format (proto/README.md), the bytes that carry
  records from producer to log to consumer.
- `liferaft_proto.status`: how an ErrorDetail rides a gRPC status, both ways.

Named `liferaft_proto` rather than `proto`, which belongs to proto-plus. Importing this package
imports nothing else, so `liferaft_proto.records` stays light (struct and crc32c only).
"""
