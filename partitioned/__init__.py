"""k-means on datasets too large for one process: the engine's kernels run as one task per
partition on a Dask cluster, and the results are reduced in partition order.

``tasks`` holds what a worker runs on one partition; ``kmeans`` drives a fit from the
server, a step at a time. Needs the ``dask`` extra.
"""
