"""Many parts at once: a series rendered by a pool of worker processes (batch) or on a Dask cluster
(cluster), each part by the same render_episode."""
