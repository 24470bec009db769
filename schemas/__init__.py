"""Wire models and settings of lorastream. Depends on nothing else in the project.

Every message on a Kafka topic is one of these pydantic models as JSON; the
exported JSON Schemas in ``schemas/json/`` let producers in any language
validate before sending (``python -m schemas.export`` regenerates them).
"""

from schemas.dead_letter import HEADER_PREFIX, DeadLetter, RejectCode
from schemas.events import EventType, InteractionEvent, ItemText, UserDeletion
from schemas.learner_config import RiverMFConfig
from schemas.settings import Settings
from schemas.vectors import ItemVector, SourcePosition, UserVector

__all__ = [
    "HEADER_PREFIX",
    "DeadLetter",
    "EventType",
    "InteractionEvent",
    "ItemText",
    "ItemVector",
    "RejectCode",
    "RiverMFConfig",
    "Settings",
    "SourcePosition",
    "UserDeletion",
    "UserVector",
]
