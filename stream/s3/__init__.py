"""S3 for every part that reads or writes buckets (exports, checks, the import, cohorts).

``client`` makes the client of a bucket target (its endpoint, region and credentials: the worker's own or a role
to assume), ``storage`` puts, lists, reads and deletes objects behind one small protocol, ``errors`` is the one
table of what an S3 (STS, KMS) failure means -- retried or not, the missing permission, the cure -- and
``probe`` performs the real operations a target needs, to name what is missing before anything runs. ``arn`` makes
every ARN (buckets, objects, queues) in the partition of its region, and ``sqs`` says what an SQS failure means.
"""
