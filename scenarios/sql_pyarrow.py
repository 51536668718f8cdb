"""SQL over Parquet and CSV that pyarrow wrote, uploaded with the aws CLI, queried with
`feiyun sql`, and answers compared with what pyarrow computes; COPY TO results read back with
the aws CLI and pyarrow."""
import io
import json
import os
import subprocess
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

endpoint = os.environ["ENDPOINT"]
feiyun = os.environ["FEIYUN_BIN"]
env = {k: v for k, v in os.environ.items() if k not in ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE")}
env["FEIYUN_ENDPOINT"] = endpoint


def aws(*args):
    return subprocess.run(
        ["aws", "--endpoint-url", endpoint, *args], check=True, capture_output=True, env=env
    ).stdout


def sql(text, *flags):
    out = subprocess.run(
        [feiyun, "sql", *flags, text], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, f"{text}: {out.stderr}"
    return out.stdout


def rows(text):
    return [json.loads(line) for line in sql(text, "--json").splitlines()]


n = 20_000
table = pa.table(
    {
        "id": pa.array(range(n), pa.int64()),
        "region": pa.array([["north", "south", "east", "west"][i % 4] for i in range(n)]),
        "amount": pa.array([(i * 37 % 1000) / 10 for i in range(n)], pa.float64()),
        "day": pa.array([f"2026-11-{1 + i % 28:02d}" for i in range(n)]),
    }
)
aws("s3", "mb", "s3://pyarrow")
with tempfile.TemporaryDirectory() as d:
    for year in (2025, 2026):
        part = table.filter(pc.equal(pc.bit_wise_and(table["id"], 1), year - 2025))
        path = os.path.join(d, f"{year}.parquet")
        # Small row groups, so statistics can prune inside a file.
        pq.write_table(part, path, row_group_size=2000, compression="zstd")
        aws("s3", "cp", path, f"s3://pyarrow/sales/year={year}/part-0.parquet")
    csv_path = os.path.join(d, "sales.csv.gz")
    with pa.CompressedOutputStream(csv_path, "gzip") as f:
        pacsv.write_csv(table, f)
    aws("s3", "cp", csv_path, "s3://pyarrow/csv/sales.csv.gz")

sql(
    "CREATE EXTERNAL TABLE sales STORED AS PARQUET PARTITIONED BY (year) "
    "LOCATION 's3://pyarrow/sales/'"
)
sql(
    "CREATE EXTERNAL TABLE sales_csv STORED AS CSV LOCATION 's3://pyarrow/csv/' "
    "OPTIONS ('format.has_header' 'true', 'format.compression' 'gzip')"
)

# Totals per region, against pyarrow's own.
want = {
    r["region"]: (r["amount_sum"], r["id_count"])
    for r in table.group_by("region").aggregate([("amount", "sum"), ("id", "count")]).to_pylist()
}
for name in ("sales", "sales_csv"):
    got = rows(f"SELECT region, sum(amount) AS s, count(id) AS c FROM {name} GROUP BY region")
    assert len(got) == 4, got
    for r in got:
        s, c = want[r["region"]]
        assert abs(r["s"] - s) < 1e-6 and r["c"] == c, (name, r, s, c)

# One partition: half the rows, odd ids only.
got = rows("SELECT count(*) AS c, min(id) AS lo FROM sales WHERE year = 2026")
assert got == [{"c": n // 2, "lo": 1}], got

# The CLI's table and CSV forms.
text = sql("SELECT region, count(*) AS c FROM sales GROUP BY region ORDER BY region")
assert text.splitlines()[0].split("|")[0].strip() == "region", text
assert text.splitlines()[-1] == "(4 rows)", text
csv = sql("SELECT region, count(*) AS c FROM sales GROUP BY region ORDER BY region", "--csv")
assert csv == "region,c\neast,5000\nnorth,5000\nsouth,5000\nwest,5000\n", csv

# COPY TO a Parquet object, read back with the aws CLI and pyarrow.
sql(
    "COPY (SELECT id, amount FROM sales WHERE region = 'east' ORDER BY id) "
    "TO 's3://pyarrow/out/east.parquet' STORED AS PARQUET"
)
body = aws("s3", "cp", "s3://pyarrow/out/east.parquet", "-")
back = pq.read_table(io.BytesIO(body))
expect = table.filter(pc.equal(table["region"], "east")).select(["id", "amount"])
assert back.num_rows == expect.num_rows, back.num_rows
assert back.column("id").to_pylist() == expect.column("id").to_pylist()
assert back.column("amount").to_pylist() == expect.column("amount").to_pylist()

# CREATE TABLE AS SELECT, then the objects it wrote read with pyarrow.
sql(
    "CREATE TABLE daily WITH (location = 's3://pyarrow/daily/') AS "
    "SELECT day, sum(amount) AS total FROM sales GROUP BY day"
)
listing = aws("s3api", "list-objects-v2", "--bucket", "pyarrow", "--prefix", "daily/")
keys = [o["Key"] for o in json.loads(listing)["Contents"]]
assert keys and all(k.endswith(".parquet") for k in keys), keys
days = pa.concat_tables(
    [pq.read_table(io.BytesIO(aws("s3", "cp", f"s3://pyarrow/{k}", "-"))) for k in keys]
)
assert days.num_rows == 28, days.num_rows
got = rows("SELECT count(*) AS c FROM daily")
assert got == [{"c": 28}], got
print("sql_pyarrow: ok")
