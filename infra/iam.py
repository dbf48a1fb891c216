"""Least-privilege access for one Suara store prefix, and a lifecycle rule for old checkpoints.

    python -m infra iam-policy --store s3://my-bucket/suara > policy.json
    python -m infra lifecycle --store s3://my-bucket/suara --run-id run1 --days 30 > lifecycle.json
    aws s3api put-bucket-lifecycle-configuration --bucket my-bucket --lifecycle-configuration file://lifecycle.json
"""

from __future__ import annotations

from typing import Any

# What the code does with the store: read, write (conditional puts included), list, delete
# (pruning, reruns), multipart uploads of large shards and checkpoints.
OBJECT_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                  "s3:ListMultipartUploadParts"]
LIST_ACTIONS = ["s3:ListBucket"]  # scoped to the prefix by the s3:prefix condition


def split_store(store: str) -> tuple[str, str]:
    if not store.startswith("s3://"):
        raise ValueError(f"{store!r} is not an s3://bucket/prefix store")
    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def iam_policy(store: str, raw_input: str | None = None) -> dict[str, Any]:
    """An IAM policy document: full use of the store prefix, read-only use of the raw corpus."""
    bucket, prefix = split_store(store)
    scoped = f"{prefix}/*" if prefix else "*"
    statements = [
        # GetBucketLocation carries no s3:prefix key, so it cannot share the conditioned statement.
        {"Sid": "LocateBucket", "Effect": "Allow", "Action": ["s3:GetBucketLocation"],
         "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "ListStorePrefix", "Effect": "Allow", "Action": LIST_ACTIONS,
         "Resource": f"arn:aws:s3:::{bucket}",
         "Condition": {"StringLike": {"s3:prefix": [prefix, scoped] if prefix else ["*"]}}},
        {"Sid": "ReadWriteStore", "Effect": "Allow", "Action": OBJECT_ACTIONS,
         "Resource": f"arn:aws:s3:::{bucket}/{scoped}"},
    ]
    if raw_input:
        raw_bucket, raw_prefix = split_store(raw_input)
        raw_scoped = f"{raw_prefix}/*" if raw_prefix else "*"
        statements += [
            {"Sid": "ListRawCorpus", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": f"arn:aws:s3:::{raw_bucket}",
             "Condition": {"StringLike": {"s3:prefix": [raw_prefix, raw_scoped] if raw_prefix else ["*"]}}},
            {"Sid": "ReadRawCorpus", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": f"arn:aws:s3:::{raw_bucket}/{raw_scoped}"},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def lifecycle_rules(store: str, run_ids: list[str], checkpoint_days: int = 30) -> dict[str, Any]:
    """S3 lifecycle rules: checkpoints of the given runs expire after `checkpoint_days` (their
    published adapters, data and ledgers stay), and abandoned multipart uploads anywhere under the
    store are cleaned after 7 days. S3 filters match key prefixes, hence one rule per run."""
    _, prefix = split_store(store)
    base = f"{prefix}/" if prefix else ""
    rules: list[dict[str, Any]] = [
        {"ID": "suara-abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": base},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}},
    ]
    for run_id in run_ids:
        rules.append({"ID": f"suara-expire-checkpoints-{run_id}", "Status": "Enabled",
                      "Filter": {"Prefix": f"{base}runs/{run_id}/checkpoints/"},
                      "Expiration": {"Days": checkpoint_days}})
    return {"Rules": rules}
