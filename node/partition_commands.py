"""Commands in a partition's Raft log, beside its record batches: today only DeleteRecords.

A partition's log is its Raft log, NORMAL entries of record batches (node/partition.py). A
change that every replica must make at the same point of the log (moving the log start offset
forward on request, Kafka's DeleteRecords) is a NORMAL entry too, so that it is replicated,
committed, kept across restarts and covered by snapshots like the batches around it. It is told
apart from a batch by its first byte: the leader stamps a base offset >= 0 into every batch it
writes (an int64, big-endian), so a stored batch's first byte is below 0x80, and a command's is
COMMAND_MARK. After the mark comes the command as JSON (node/command.py). Such an entry takes no
offsets, like a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.command import Command, CommandSet, check_int

PARTITION_COMMANDS = CommandSet("partition")

COMMAND_MARK = b"\xff"
"""The first byte of a command entry: never the first byte of a stored batch (see above)."""


def is_command(data: bytes) -> bool:
    """Whether a NORMAL entry of a partition's log is a command (else it is a record batch)."""
    return data[:1] == COMMAND_MARK


def encode(cmd: Command) -> bytes:
    return COMMAND_MARK + cmd.encode()


def decode(data: bytes) -> Command:
    """The command in a command entry; INVALID_REQUEST (a BrokerError) if it is not one."""
    return PARTITION_COMMANDS.decode(data[len(COMMAND_MARK) :])


@PARTITION_COMMANDS.register
@dataclass(frozen=True, kw_only=True, slots=True)
class DeleteRecords(Command):
    """Move the log start offset up to `offset` (Kafka's DeleteRecords): records below it are
    no longer served. Applied as max(log start, offset), so applying it twice, or after a
    snapshot that already reflects it, changes nothing. The leader proposes it only for an
    offset at most its high watermark, which every replica has reached when it applies it (the
    batches below that offset precede the command in the log)."""

    op: ClassVar[str] = "delete_records"
    offset: int

    def __post_init__(self) -> None:
        check_int(self.op, "offset", self.offset)
