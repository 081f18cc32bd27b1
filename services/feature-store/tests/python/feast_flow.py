"""Feast's Python SDK, unchanged, against mizzen-features as its remote online store.

feast_flow.py URL WORKDIR: a Feast repo in WORKDIR whose online store is `{type: remote, path: URL}`,
with the FeatureSet `customers` of tests/feast.rs as a FeatureView. Writes through the SDK, reads through
the SDK, and prints a JSON summary of what it saw as its last line."""

import datetime as dt
import json
import os
import sys

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import PushMode
from feast.types import Float64, Int64, String

url, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
with open(os.path.join(work, "feature_store.yaml"), "w") as f:
    f.write(
        f"""project: mizzen
registry: {work}/registry.db
provider: local
online_store:
  type: remote
  path: {url}
offline_store:
  type: file
entity_key_serialization_version: 3
"""
    )

now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
# The batch source behind the push source: Feast wants a file it can describe.
pd.DataFrame(
    {"customer_id": pd.Series([], dtype="int64"), "spend": pd.Series([], dtype="float64"),
     "visits": pd.Series([], dtype="int64"), "segment": pd.Series([], dtype="str"),
     "ts": pd.Series([], dtype="datetime64[ns, UTC]")}
).to_parquet(os.path.join(work, "events.parquet"))

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
batch = FileSource(name="events_batch", path=os.path.join(work, "events.parquet"), timestamp_field="ts")
events = PushSource(name="events", batch_source=batch)
customers = FeatureView(
    name="customers",
    entities=[customer],
    ttl=dt.timedelta(hours=1),
    schema=[Field(name="spend", dtype=Float64), Field(name="visits", dtype=Int64), Field(name="segment", dtype=String)],
    source=events,
    online=True,
)
store = FeatureStore(repo_path=work)
store.apply([customer, events, customers])


def push(rows):
    df = pd.DataFrame(rows)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    store.push("events", df, to=PushMode.ONLINE)


def read(ids):
    response = store.get_online_features(
        features=["customers:spend", "customers:visits", "customers:segment"],
        entity_rows=[{"customer_id": i} for i in ids],
    )
    return response.to_dict()


summary = {}
# Written through the SDK (POST /write-to-online-store), read back (POST /get-online-features).
push({"customer_id": [1, 2, 3], "spend": [10.5, 20.0, 7.0], "visits": [3, 4, 5],
      "segment": ["gold", "silver", "bronze"], "ts": [now - dt.timedelta(minutes=10)] * 2 + [now - dt.timedelta(hours=2)]})
summary["first"] = read([1, 2, 3, 99])
# A newer row overwrites; an older one is ignored.
push({"customer_id": [1], "spend": [11.5], "visits": [6], "segment": ["platinum"], "ts": [now - dt.timedelta(minutes=5)]})
push({"customer_id": [2], "spend": [0.5], "visits": [1], "segment": ["old"], "ts": [now - dt.timedelta(minutes=50)]})
summary["second"] = read([1, 2])
# A missing float (pandas NaN) is a null.
push({"customer_id": [4], "spend": [float("nan")], "visits": [1], "segment": ["new"], "ts": [now]})
summary["nan"] = read([4])
# A feature the server does not have: refused with a message the SDK passes on.
try:
    store.get_online_features(features=["customers:height"], entity_rows=[{"customer_id": 1}])
    summary["unknown_feature"] = "accepted"
except Exception as e:  # noqa: BLE001 - the SDK raises its own types; the message is what matters
    summary["unknown_feature"] = str(e)[:300]
print(json.dumps(summary, default=str))
