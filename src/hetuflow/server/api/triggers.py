"""Trigger, event and hook routes (docs/triggers.md). Thin: each parses, calls
``TriggerService``, serialises.

``calls_router`` holds the one route a hook's caller uses (``POST /api/hooks/{name}``): it is
included without the bearer-token check, and answers only a valid signature.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from hetuflow.server.api.deps import Context, Queue
from hetuflow.server.api.errors import error_responses
from hetuflow.server.api.schemas import encode_json
from hetuflow.server.api.trigger_schemas import (
    HOOK_NAME_PATTERN,
    EventCreate,
    EventOut,
    HookCreate,
    HookCreated,
    HookList,
    HookOut,
    TriggerCreate,
    TriggerList,
    TriggerOut,
    TriggerSpecs,
    hook_body,
)
from hetuflow.server.triggers import TriggerService
from hetuflow.triggers import (
    EVENT_ID_HEADER,
    EVENT_KEY_PATTERN,
    MAX_EVENT_KEY_LENGTH,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NewEvent,
)

router = APIRouter(prefix="/api", tags=["triggers"])
calls_router = APIRouter(prefix="/api", tags=["triggers"])


async def get_triggers(queue: Queue, context: Context) -> TriggerService:
    return TriggerService(queue, TriggerSpecs(context.config.scheduler.retry_interval_seconds))


Triggers = Annotated[TriggerService, Depends(get_triggers)]
HookNamePath = Annotated[
    str, Path(max_length=128, pattern=HOOK_NAME_PATTERN, description="The hook's name.")
]


def _delivered(out: EventOut) -> Response:
    """201 for a first delivery, 200 for a replay of its id."""
    status = 201 if out.created else 200
    return Response(encode_json(out.model_dump(mode="json")), status, media_type="application/json")


_DELIVERY_RESPONSES = {
    200: {"model": EventOut, "description": "The event id was delivered before: its tasks"},
    **error_responses(400, 409, 413, 422),
}


# --- triggers ---------------------------------------------------------------------------------


@router.post(
    "/triggers",
    status_code=201,
    response_model=TriggerOut,
    summary="Create a trigger",
    responses=error_responses(400, 409, 422),
)
async def create_trigger(body: TriggerCreate, triggers: Triggers) -> TriggerOut:
    """Bind a task spec (or a workflow) to an event key: every event of that key whose data
    passes `filter` creates one task from `task` (or one workflow from `workflow`), with the
    event under the payload key `event` (of every step). **409** `trigger_name_taken`;
    **422** `workflow_invalid` for a workflow that could never run."""
    return TriggerOut.of(await triggers.create_trigger(body.to_new_trigger()))


@router.get(
    "/triggers",
    response_model=TriggerList,
    summary="List triggers",
    responses=error_responses(422),
)
async def list_triggers(
    triggers: Triggers,
    event: Annotated[
        str | None,
        Query(max_length=MAX_EVENT_KEY_LENGTH, pattern=EVENT_KEY_PATTERN, description="Event key."),
    ] = None,
) -> TriggerList:
    """By name; only those bound to `event` when given."""
    return TriggerList(items=[TriggerOut.of(t) for t in await triggers.list_triggers(event)])


@router.get(
    "/triggers/{trigger_id}",
    response_model=TriggerOut,
    summary="Get a trigger",
    responses=error_responses(404, 422),
)
async def get_trigger(trigger_id: UUID, triggers: Triggers) -> TriggerOut:
    return TriggerOut.of(await triggers.get_trigger(trigger_id))


@router.delete(
    "/triggers/{trigger_id}",
    status_code=204,
    summary="Delete a trigger",
    responses=error_responses(404, 422),
)
async def delete_trigger(trigger_id: UUID, queue: Queue) -> Response:
    """Tasks it created are kept."""
    await queue.store.delete_trigger(trigger_id)
    return Response(status_code=204)


# --- events -----------------------------------------------------------------------------------


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    summary="Send an event",
    responses=_DELIVERY_RESPONSES,
)
async def send_event(body: EventCreate, triggers: Triggers) -> Response:
    """Create one task (or workflow) per trigger bound to `key` whose filter `data` passes,
    and record the event, in one transaction. Exactly once per event `id`: a second delivery
    creates nothing and answers **200** with the first one's tasks and workflows (**409**
    `event_id_reused` if that one had another key). An event whose filters all refuse it is
    recorded with `matched: 0` and no task (**201**). **422** `no_trigger` when no trigger is
    bound to `key` at all (nothing recorded: most often a typo)."""
    event = NewEvent(id=body.id or str(uuid4()), key=body.key, data=body.data)
    return _delivered(EventOut.of(await triggers.deliver(event)))


# --- hooks ------------------------------------------------------------------------------------


@router.post(
    "/hooks",
    status_code=201,
    response_model=HookCreated,
    summary="Create a hook",
    responses=error_responses(400, 409, 422),
)
async def create_hook(body: HookCreate, triggers: Triggers) -> HookCreated:
    """A signed webhook endpoint, `POST /api/hooks/{name}`, whose calls become events of
    `event`. The answer carries the signing secret; it is never shown again.
    **409** `hook_name_taken`."""
    return HookCreated.created(await triggers.create_hook(body.name, body.event, body.secret))


@router.get("/hooks", response_model=HookList, summary="List hooks")
async def list_hooks(queue: Queue) -> HookList:
    """By name, without their secrets."""
    return HookList(items=[HookOut.of(h) for h in await queue.store.list_hooks()])


@router.delete(
    "/hooks/{name}",
    status_code=204,
    summary="Delete a hook",
    responses=error_responses(404, 422),
)
async def delete_hook(name: HookNamePath, queue: Queue) -> Response:
    """Its calls are refused (404) from now on; events it delivered and their tasks stay."""
    await queue.store.delete_hook(name)
    return Response(status_code=204)


@calls_router.post(
    "/hooks/{name}",
    status_code=201,
    response_model=EventOut,
    summary="Call a hook (signed; no token needed)",
    responses={**_DELIVERY_RESPONSES, **error_responses(401, 404)},
    openapi_extra={
        "parameters": [
            {
                "in": "header",
                "name": SIGNATURE_HEADER,
                "required": True,
                "schema": {"type": "string"},
                "description": "`sha256=` and the hex HMAC-SHA256, keyed with the hook's "
                "secret, of `<timestamp>.<raw body>`.",
            },
            {
                "in": "header",
                "name": TIMESTAMP_HEADER,
                "required": True,
                "schema": {"type": "string"},
                "description": "Unix seconds; refused more than 300 s from the server's clock.",
            },
            {
                "in": "header",
                "name": EVENT_ID_HEADER,
                "required": False,
                "schema": {"type": "string"},
                "description": "The event id (default: `hook:<name>:<sha256 of the body>`).",
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    },
)
async def call_hook(name: HookNamePath, request: Request, triggers: Triggers) -> Response:
    """The body (a JSON object) becomes the `data` of an event of the hook's key, delivered as
    `POST /api/events` does. No bearer token: the signature is the credential. **404**
    `hook_not_found`; **401** `signature_invalid` (missing, wrong or stale; nothing created)."""
    body = await request.body()
    delivery = await triggers.call_hook(name, request.headers, body, hook_body)
    return _delivered(EventOut.of(delivery))
