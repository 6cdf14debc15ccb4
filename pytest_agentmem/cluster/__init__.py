"""Load beyond one machine: ``perf.run(..., processes=N)`` over a Ray cluster (``--agentmem-load-cluster``).

:mod:`.ray_cluster` starts or joins the cluster, :mod:`.actor` is the load
worker on a node, :mod:`.coordinator` runs one load over the workers and merges
their figures, :mod:`.plugin` ties it to the pytest run. Ray is imported only
when a cluster is used (the ``[cluster]`` extra).
"""
