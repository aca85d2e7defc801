"""Where a node that knows it is cut off sends Kafka clients for a leaderless partition.

The case (docs/kafka.md, "Under faults"): a partition's leader is isolated; check-quorum makes it
step down, the others elect a new leader, and this node, hearing no one, knows no leader. A
producer bound to that partition holds one connection, to this node, and librdkafka asks for
metadata only over connections it already has (rdkafka_broker.c, rd_kafka_broker_any_usable:
only brokers that are up weigh anything). Answering "leader -1" made it ask here again every
~100 ms until the fault healed, and partition errors do not help: librdkafka and kafka-python
read only the leader and its epoch of each partition (rdkafka_topic.c,
rd_kafka_topic_metadata_update).

So a node that knows it is cut off (it hears no controller leader, and has no leader for the
partition) names another replica of the partition as its leader, with leader epoch -1
("unknown"): librdkafka applies an update with epoch -1 whatever epoch it holds (an epoch would
have to be newer than the client's to be believed, and this node knows none newer), connects to
that replica and sends there. What it sends can only be refused if the guess is wrong: Produce
and Fetch check leadership (NOT_LEADER_OR_FOLLOWER), and the refusal makes the client ask for
metadata again, now also over its new connection, to a node that hears the others and names the
real leader with its epoch. The guesses rotate through the other replicas, so a client that
keeps asking here is not sent to the same wrong one forever. The partition's error is
NOT_LEADER_OR_FOLLOWER, so a client that does read it (Java's) also refreshes soon.

A node that hears the controller leader is not cut off: it answers what it knows, leader -1
included (an election under way).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

_turn = itertools.count()


def leader_hint(node_id: int, replicas: Sequence[int], controller_leader: int) -> int | None:
    """The replica to name as a leaderless partition's leader, or None to name none."""
    if controller_leader:
        return None
    others = [n for n in replicas if n != node_id]
    if not others:
        return None
    return others[next(_turn) % len(others)]
