"""The synchronous SDK's calls on stored models and on the server itself: describe, list and
delete models, and ask the server's health. Client has them all."""

from __future__ import annotations

from collections.abc import Iterator

from grpc_health.v1 import health_pb2

from centroidal import codec

from ._calls import delete_model_request, get_model_request, list_models_request
from .results import ModelInfo
from .transport import SyncTransport


class ModelCalls(SyncTransport):
    """Calls that move no points: a Client's model management and health."""

    # ---- health ----------------------------------------------------------

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status name: SERVING, NOT_SERVING or SERVICE_UNKNOWN."""
        response = self.unary(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout
        )
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # ---- model management ------------------------------------------------

    def get_model(
        self,
        name: str,
        *,
        version: int | None = None,
        include_centers: bool = True,
        timeout: float | None = None,
    ) -> ModelInfo:
        """Describe model ``name`` (or a kept earlier version); centers unless include_centers is False."""
        request = get_model_request(name, version, include_centers)
        return codec.decode_model(self.unary(self._methods.get_model, request, timeout))

    def list_models_page(
        self, *, page_size: int = 100, page_token: str = "", timeout: float | None = None
    ) -> tuple[list[ModelInfo], str]:
        """One page of models in name order, and the token of the next page ("" at the end)."""
        request = list_models_request(page_size, page_token)
        page = codec.decode_list_models_response(self.unary(self._methods.list_models, request, timeout))
        return list(page.models), page.next_page_token

    def iter_models(self, *, page_size: int = 100, timeout: float | None = None) -> Iterator[ModelInfo]:
        """Every model, fetched a page at a time."""
        token = ""
        while True:
            models, token = self.list_models_page(page_size=page_size, page_token=token, timeout=timeout)
            yield from models
            if not token:
                return

    def list_models(self, *, page_size: int = 100, timeout: float | None = None) -> list[ModelInfo]:
        """Every model, without centers."""
        return list(self.iter_models(page_size=page_size, timeout=timeout))

    def delete_model(
        self, name: str, *, expected_version: int | None = None, timeout: float | None = None
    ) -> int:
        """Delete model ``name``; returns the version the delete wrote."""
        request = delete_model_request(name, expected_version)
        return codec.decode_delete_model_response(self.unary(self._methods.delete_model, request, timeout)).version
