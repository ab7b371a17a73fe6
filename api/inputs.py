"""The size limits on a job that are settings: prompt bytes, number of messages, each image's decoded bytes."""

from __future__ import annotations

from corral.common.errors import InvalidRequest, PayloadTooLarge
from corral.common.schemas import JobRequest
from corral.common.settings import Settings


def image_bytes(image: str) -> int:
    return len(image) * 3 // 4


def check_request(request: JobRequest, settings: Settings) -> None:
    """The size limits that are settings: prompt bytes (413), messages (422), each image's bytes (413)."""
    request.check_limits(settings.max_prompt_bytes)
    messages = request.messages or []
    if len(messages) > settings.max_messages:
        raise InvalidRequest(f"{len(messages)} messages, over the limit of {settings.max_messages}")
    images = [*(request.images or ()), *(i for m in messages for i in m.images or ())]
    for image in images:
        size = image_bytes(image)
        if size > settings.max_image_bytes:
            raise PayloadTooLarge(
                f"an image is {size} bytes, over the limit of {settings.max_image_bytes}",
                size=size,
                limit=settings.max_image_bytes,
            )
