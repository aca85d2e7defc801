from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("cluster_id", "from_node", "to_node", "advertise", "incarnation", "controller_term", "rejoining")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_TERM_FIELD_NUMBER: _ClassVar[int]
    REJOINING_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    from_node: int
    to_node: int
    advertise: str
    incarnation: int
    controller_term: int
    rejoining: bool
    def __init__(self, cluster_id: _Optional[str] = ..., from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., advertise: _Optional[str] = ..., incarnation: _Optional[int] = ..., controller_term: _Optional[int] = ..., rejoining: _Optional[bool] = ...) -> None: ...

class LeaderStates(_message.Message):
    __slots__ = ("from_node", "states", "fences", "incarnation", "silent_groups")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    FENCES_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SILENT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    states: _containers.RepeatedCompositeFieldContainer[LeaderState]
    fences: _containers.RepeatedCompositeFieldContainer[FenceGrant]
    incarnation: int
    silent_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, from_node: _Optional[int] = ..., states: _Optional[_Iterable[_Union[LeaderState, _Mapping]]] = ..., fences: _Optional[_Iterable[_Union[FenceGrant, _Mapping]]] = ..., incarnation: _Optional[int] = ..., silent_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class FenceGrant(_message.Message):
    __slots__ = ("group", "node", "incarnation", "min_term", "index")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    MIN_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    group: str
    node: int
    incarnation: int
    min_term: int
    index: int
    def __init__(self, group: _Optional[str] = ..., node: _Optional[int] = ..., incarnation: _Optional[int] = ..., min_term: _Optional[int] = ..., index: _Optional[int] = ...) -> None: ...

class LeaderState(_message.Message):
    __slots__ = ("group", "leader", "epoch", "isr", "high_watermark", "log_start_offset", "voters", "learners", "conf_index")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOG_START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    CONF_INDEX_FIELD_NUMBER: _ClassVar[int]
    group: str
    leader: int
    epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    high_watermark: int
    log_start_offset: int
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    conf_index: int
    def __init__(self, group: _Optional[str] = ..., leader: _Optional[int] = ..., epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., high_watermark: _Optional[int] = ..., log_start_offset: _Optional[int] = ..., voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., conf_index: _Optional[int] = ...) -> None: ...

class RaftSnapshot(_message.Message):
    __slots__ = ("meta", "data")
    META_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    meta: RaftSnapshotMeta
    data: bytes
    def __init__(self, meta: _Optional[_Union[RaftSnapshotMeta, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RaftSnapshotMeta(_message.Message):
    __slots__ = ("index", "term", "conf_state")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_STATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    conf_state: RaftConfState
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., conf_state: _Optional[_Union[RaftConfState, _Mapping]] = ...) -> None: ...

class RaftConfState(_message.Message):
    __slots__ = ("voters", "learners")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ...) -> None: ...
