"""The analyses. Each binds its run(s) and data, has one `compute(...)`, and returns a typed result
that serialises to runs/analyses/<kind>/<name>.json with the fingerprints of its inputs."""
