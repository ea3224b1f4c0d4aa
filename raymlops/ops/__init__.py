"""Operating raymlops around a pipeline: clusters, Ray Jobs, KubeRay manifests, Ray's token, CI checks.

Nothing below ``cli`` imports these: they run a pipeline or the Ray it runs on, they are not part of one.
"""
