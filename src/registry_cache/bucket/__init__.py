"""The shared content tier: an S3-compatible bucket behind every replica's local tier.

- ``location.py``: ``s3://BUCKET/PREFIX`` and the layout of keys under it (the one
  place that knows keys).
- ``breaker.py``: the bucket's health: a short circuit breaker, one log line per outage.
- ``transfer.py``: bulk bytes, moved by threads with urllib3 over presigned URLs
  (ranged GETs for fills, UploadPart/PutObject PUTs): they never cross the event loop.
- ``store.py``: ``S3BlobStore``, the ``BlobStore`` contract over a bucket (aiobotocore
  for everything but bulk bytes), plus verified uploads and the multipart listing.
- ``upload.py``: background, bounded, verified uploads of what the local tier committed.
- ``sweep.py``: abandoned multipart uploads removed (at start and by ``cache gc``).
- ``tier.py``: ``SharedTier``, what the rest of the product uses: a fill source, uploads
  offered, manifests, redirects, readiness.
- ``tiered.py``: ``TieredStore``, the proxy's ``BlobStore``: the local tier in front.
- ``evict.py``: ``--shared-max-size``, least recently used across the cluster.
- ``maintenance.py``: what ``cache ls/du/verify/gc/prune`` do to the bucket.

README "Scaling out" describes the tier (keys, cost of each request, failures).
"""
