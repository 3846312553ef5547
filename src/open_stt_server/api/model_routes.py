"""/v1/models: the loaded models as OpenAI's model list."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from open_stt_server.api.auth import require_api_key
from open_stt_server.api.errors import APIError
from open_stt_server.catalog import OPENAI_DIARIZE_ALIAS, OPENAI_WHISPER_ALIAS
from open_stt_server.scheduler import ServedModels

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_api_key)])
OWNER = "open-stt-server"


def _model(model_id: str, created: int) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


@router.get("/models")
async def list_models(request: Request) -> dict:
    served: ServedModels = request.app.state.models
    ids = {*served.names(), OPENAI_WHISPER_ALIAS}
    if request.app.state.diarization is not None:
        ids.add(OPENAI_DIARIZE_ALIAS)
    ids = sorted(ids)
    return {"object": "list", "data": [_model(i, served.loaded_at) for i in ids]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    served: ServedModels = request.app.state.models
    queue = served.resolve(model_id)
    if queue is None:
        raise APIError(
            404,
            f"The model '{model_id}' does not exist or is not loaded on this server.",
            param="model",
            code="model_not_found",
        )
    openai_name = model_id in (OPENAI_WHISPER_ALIAS, *served.aliases)
    return _model(model_id if openai_name else queue.name, served.loaded_at)
