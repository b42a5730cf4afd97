from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ping(_message.Message):
    __slots__ = ("device_id", "ts_ms", "lat", "lng", "region", "accuracy_m", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LNG_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ts_ms: int
    lat: float
    lng: float
    region: str
    accuracy_m: float
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., lat: _Optional[float] = ..., lng: _Optional[float] = ..., region: _Optional[str] = ..., accuracy_m: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DoorEvent(_message.Message):
    __slots__ = ("sensor_id", "ts_ms", "direction")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    ts_ms: int
    direction: int
    def __init__(self, sensor_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., direction: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StreamPingsRequest(_message.Message):
    __slots__ = ("device_id", "ts_ms", "lat", "lng", "region", "accuracy_m", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LNG_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    ts_ms: int
    lat: float
    lng: float
    region: str
    accuracy_m: float
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, device_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., lat: _Optional[float] = ..., lng: _Optional[float] = ..., region: _Optional[str] = ..., accuracy_m: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StreamPingsResponse(_message.Message):
    __slots__ = ("accepted", "late", "rejected", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    late: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., late: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class SendPingsRequest(_message.Message):
    __slots__ = ("pings",)
    PINGS_FIELD_NUMBER: _ClassVar[int]
    pings: _containers.RepeatedCompositeFieldContainer[Ping]
    def __init__(self, pings: _Optional[_Iterable[_Union[Ping, _Mapping]]] = ...) -> None: ...

class SendPingsResponse(_message.Message):
    __slots__ = ("accepted", "late", "rejected", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    late: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., late: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class SendPingColumnsRequest(_message.Message):
    __slots__ = ("device_ids", "ts_ms", "lat", "lng", "accuracy_m", "region")
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LNG_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_M_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    lat: _containers.RepeatedScalarFieldContainer[float]
    lng: _containers.RepeatedScalarFieldContainer[float]
    accuracy_m: _containers.RepeatedScalarFieldContainer[float]
    region: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device_ids: _Optional[_Iterable[str]] = ..., ts_ms: _Optional[_Iterable[int]] = ..., lat: _Optional[_Iterable[float]] = ..., lng: _Optional[_Iterable[float]] = ..., accuracy_m: _Optional[_Iterable[float]] = ..., region: _Optional[_Iterable[str]] = ...) -> None: ...

class SendPingColumnsResponse(_message.Message):
    __slots__ = ("accepted", "late", "rejected", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    late: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., late: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class SendDoorEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DoorEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DoorEvent, _Mapping]]] = ...) -> None: ...

class SendDoorEventsResponse(_message.Message):
    __slots__ = ("accepted", "rejected", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class PingBatch(_message.Message):
    __slots__ = ("pings",)
    PINGS_FIELD_NUMBER: _ClassVar[int]
    pings: _containers.RepeatedCompositeFieldContainer[Ping]
    def __init__(self, pings: _Optional[_Iterable[_Union[Ping, _Mapping]]] = ...) -> None: ...

class DoorEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DoorEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DoorEvent, _Mapping]]] = ...) -> None: ...

class IngestAck(_message.Message):
    __slots__ = ("accepted", "late", "rejected", "rejections")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    late: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, accepted: _Optional[int] = ..., late: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...
