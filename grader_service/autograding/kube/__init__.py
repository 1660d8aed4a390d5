"""The Kubernetes executor: pure object builders, the pod reflector and the executor."""
