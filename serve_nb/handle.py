"""``from serve_nb.handle import DeploymentHandle`` mirrors ``from ray.serve.handle import ...``."""

from serve_nb.data.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator"]
