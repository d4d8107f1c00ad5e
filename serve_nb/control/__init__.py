"""The control plane: the controller actor, deployment state, proxies, checkpoints; Ray calls behind wrappers."""
