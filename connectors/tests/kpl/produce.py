"""Aggregates user records into KPL-format Kinesis records with AWS's own aggregator.

The independent producer of the Kinesis ingress's de-aggregation tests
(connectors/tests/kinesis_kpl.rs, examples/crash-counter/tests/kinesis_crash.rs): the
records are packed by `aws_kinesis_agg.aggregator.RecordAggregator` (PyPI
`aws-kinesis-agg`, installed by ci/install-python-sdk.sh), not by anything of statefun-rs.

stdin: a JSON list of aggregates, each a list of user records
    {"pk": partition key, "data": UTF-8 text, "ehk": explicit hash key (optional)}
stdout: one JSON object per aggregate, in order, ready for PutRecord(s):
    {"partition_key": ..., "explicit_hash_key": ... or null, "data": hex of the record}
Each aggregate must fit one Kinesis record (1 MiB); one that does not is an error, so
an aggregate is always exactly the user records it was given, in order.
"""

import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator


def main():
    aggregates = json.load(sys.stdin)
    aggregator = RecordAggregator()
    for n, users in enumerate(aggregates):
        if not users:
            sys.exit(f"aggregate {n} is empty: the aggregator makes no empty records")
        for user in users:
            full = aggregator.add_user_record(user["pk"], user["data"].encode("utf-8"), user.get("ehk"))
            if full is not None:
                sys.exit(f"aggregate {n} does not fit one Kinesis record")
        record = aggregator.clear_and_get()
        if record.get_num_user_records() != len(users):
            sys.exit(f"aggregate {n}: {record.get_num_user_records()} records, expected {len(users)}")
        partition_key, explicit_hash_key, data = record.get_contents()
        print(json.dumps({
            "partition_key": partition_key,
            "explicit_hash_key": explicit_hash_key,
            "data": data.hex(),
        }))


if __name__ == "__main__":
    main()
