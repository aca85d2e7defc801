"""Errors inside the broker: exceptions carrying the code the client will see.

They become a gRPC status with an ErrorDetail at exactly one place, node/service.py's `unary`
wrapper; inside node/ code raises them like any exception.
"""

from __future__ import annotations

from liferaft_proto.codes import is_retriable
from liferaft_proto.v1.errors_pb2 import ErrorCode

__all__ = ["BrokerError", "ErrorCode"]


class BrokerError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        leader_id: int = 0,
        leader_address: str = "",
        leader_epoch: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.leader_id = leader_id
        self.leader_address = leader_address
        self.leader_epoch = leader_epoch

    @property
    def retriable(self) -> bool:
        return is_retriable(self.code)

    @property
    def code_name(self) -> str:
        return str(ErrorCode.Name(self.code))

    def __repr__(self) -> str:
        return f"BrokerError({self.code_name}, {self.message!r})"
