"""Names and records shared by the control plane and the data plane (neither imports the other)."""
