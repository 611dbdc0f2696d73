"""A bare RecommendationService that echoes the request id: the baseline the serving
benchmark compares Recommend against (same server setup, same messages, no work)."""

from __future__ import annotations

from proto import serving_pb2, serving_pb2_grpc
from serving._app import RECOMMENDATION_INLINE, RECOMMENDATION_SCOPES, RECOMMENDATION_SERVICE
from serving._server import Service


class EchoServicer(serving_pb2_grpc.RecommendationServiceServicer):
    def Recommend(self, request, context):  # noqa: N802 - gRPC method name
        return serving_pb2.RecommendResponse(request_id=request.request_id)

    def ReportFeedback(self, request, context):  # noqa: N802
        return serving_pb2.FeedbackResponse(event_id=request.impression_token)


def echo_service() -> Service:
    """The echo baseline as a ``Service`` for ``build_server``."""
    return Service(RECOMMENDATION_SERVICE, serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                   EchoServicer(), RECOMMENDATION_SCOPES,
                   inline=RECOMMENDATION_INLINE)
