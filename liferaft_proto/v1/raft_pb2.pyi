from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("cluster_id", "from_node", "to_node", "advertise")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    from_node: int
    to_node: int
    advertise: str
    def __init__(self, cluster_id: _Optional[str] = ..., from_node: _Optional[int] = ..., to_node: _Optional[int] = ..., advertise: _Optional[str] = ...) -> None: ...

class RaftFrame(_message.Message):
    __slots__ = ("hello", "batch", "leaders")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    LEADERS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: RaftBatch
    leaders: LeaderStates
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[RaftBatch, _Mapping]] = ..., leaders: _Optional[_Union[LeaderStates, _Mapping]] = ...) -> None: ...

class LeaderStates(_message.Message):
    __slots__ = ("from_node", "states")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    states: _containers.RepeatedCompositeFieldContainer[LeaderState]
    def __init__(self, from_node: _Optional[int] = ..., states: _Optional[_Iterable[_Union[LeaderState, _Mapping]]] = ...) -> None: ...

class LeaderState(_message.Message):
    __slots__ = ("group", "leader", "epoch", "isr", "high_watermark", "log_start_offset")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ISR_FIELD_NUMBER: _ClassVar[int]
    HIGH_WATERMARK_FIELD_NUMBER: _ClassVar[int]
    LOG_START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    group: str
    leader: int
    epoch: int
    isr: _containers.RepeatedScalarFieldContainer[int]
    high_watermark: int
    log_start_offset: int
    def __init__(self, group: _Optional[str] = ..., leader: _Optional[int] = ..., epoch: _Optional[int] = ..., isr: _Optional[_Iterable[int]] = ..., high_watermark: _Optional[int] = ..., log_start_offset: _Optional[int] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("from_node", "seq", "messages", "heartbeats")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEATS_FIELD_NUMBER: _ClassVar[int]
    from_node: int
    seq: int
    messages: _containers.RepeatedCompositeFieldContainer[GroupMessage]
    heartbeats: bytes
    def __init__(self, from_node: _Optional[int] = ..., seq: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[GroupMessage, _Mapping]]] = ..., heartbeats: _Optional[bytes] = ...) -> None: ...

class GroupMessage(_message.Message):
    __slots__ = ("group", "msg")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    group: str
    msg: RaftMessage
    def __init__(self, group: _Optional[str] = ..., msg: _Optional[_Union[RaftMessage, _Mapping]] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("type", "to", "frm", "term", "log_term", "index", "entries", "commit", "reject", "reject_hint", "snapshot", "context")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        APP: _ClassVar[RaftMessage.Type]
        APP_RESP: _ClassVar[RaftMessage.Type]
        VOTE: _ClassVar[RaftMessage.Type]
        VOTE_RESP: _ClassVar[RaftMessage.Type]
        PRE_VOTE: _ClassVar[RaftMessage.Type]
        PRE_VOTE_RESP: _ClassVar[RaftMessage.Type]
        HEARTBEAT: _ClassVar[RaftMessage.Type]
        HEARTBEAT_RESP: _ClassVar[RaftMessage.Type]
        SNAP: _ClassVar[RaftMessage.Type]
        TIMEOUT_NOW: _ClassVar[RaftMessage.Type]
    APP: RaftMessage.Type
    APP_RESP: RaftMessage.Type
    VOTE: RaftMessage.Type
    VOTE_RESP: RaftMessage.Type
    PRE_VOTE: RaftMessage.Type
    PRE_VOTE_RESP: RaftMessage.Type
    HEARTBEAT: RaftMessage.Type
    HEARTBEAT_RESP: RaftMessage.Type
    SNAP: RaftMessage.Type
    TIMEOUT_NOW: RaftMessage.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    FRM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    REJECT_HINT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    type: RaftMessage.Type
    to: int
    frm: int
    term: int
    log_term: int
    index: int
    entries: _containers.RepeatedCompositeFieldContainer[RaftEntry]
    commit: int
    reject: bool
    reject_hint: int
    snapshot: RaftSnapshot
    context: bytes
    def __init__(self, type: _Optional[_Union[RaftMessage.Type, str]] = ..., to: _Optional[int] = ..., frm: _Optional[int] = ..., term: _Optional[int] = ..., log_term: _Optional[int] = ..., index: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[RaftEntry, _Mapping]]] = ..., commit: _Optional[int] = ..., reject: _Optional[bool] = ..., reject_hint: _Optional[int] = ..., snapshot: _Optional[_Union[RaftSnapshot, _Mapping]] = ..., context: _Optional[bytes] = ...) -> None: ...

class RaftEntry(_message.Message):
    __slots__ = ("index", "term", "type", "data")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        NORMAL: _ClassVar[RaftEntry.Type]
        NOOP: _ClassVar[RaftEntry.Type]
        CONF_CHANGE: _ClassVar[RaftEntry.Type]
    NORMAL: RaftEntry.Type
    NOOP: RaftEntry.Type
    CONF_CHANGE: RaftEntry.Type
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    term: int
    type: RaftEntry.Type
    data: bytes
    def __init__(self, index: _Optional[int] = ..., term: _Optional[int] = ..., type: _Optional[_Union[RaftEntry.Type, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

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
