"""Static checks of the container image, the Kubernetes manifests and the compose demo."""
