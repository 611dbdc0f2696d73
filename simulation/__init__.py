"""The synthetic world with a known ground truth, for the demo, tests and benchmarks.

Never imported by production code paths. Build a world (``build_world``), sample
request contexts (``sample_contexts``), score impressions with the ground truth
(``true_probabilities``), produce a logged training set
(``simulate_logged_impressions``) and the best achievable metrics (``bayes_metrics``).
Loading into the campaign store, Kafka traffic and the closed-loop responder live in
the same package (see docs/simulation.md).
"""

from simulation._context import MAX_OBJECTS, ContextBatch, sample_contexts
from simulation._load import campaign_window, load_world, world_to_campaign_models
from simulation._logged import request_frame, simulate_logged_impressions, to_feedback_events
from simulation._metrics import auc, bayes_metrics, log_loss
from simulation._respond import GrpcServingClient, RespondResult, ServingClient, respond
from simulation._traffic import (
    TrafficPlan, TrafficStats, consent_message, context_message, context_proto, encode_plan, iter_plan, plan_traffic,
    produce_traffic,
)
from simulation._truth import ResponseModel, relevance, true_probabilities
from simulation._world import Items, Latent, World, WorldConfig, build_world
from simulation.errors import SimulationConfigError, SimulationError, SimulationUnavailable

__all__ = [
    "WorldConfig", "World", "Items", "Latent", "build_world",
    "ContextBatch", "MAX_OBJECTS", "sample_contexts", "request_frame",
    "ResponseModel", "relevance", "true_probabilities",
    "simulate_logged_impressions", "to_feedback_events", "bayes_metrics", "auc", "log_loss",
    "load_world", "world_to_campaign_models", "campaign_window",
    "TrafficPlan", "TrafficStats", "plan_traffic", "produce_traffic", "iter_plan", "encode_plan",
    "context_message", "consent_message", "context_proto",
    "ServingClient", "GrpcServingClient", "RespondResult", "respond",
    "SimulationError", "SimulationConfigError", "SimulationUnavailable",
]
