"""One liferaft broker process: gRPC servers, Raft driver, controller, partitions, storage."""
