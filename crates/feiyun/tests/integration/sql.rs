//! SQL analytics through `POST /sql` and `feiyun sql`: formats and compression, Hive
//! partitions pruned (counted in objects read), the catalog across a restart, COPY TO and
//! CREATE TABLE … AS SELECT read back with the S3 API, a failed statement leaving nothing,
//! authorization per object and per bucket, SSE-KMS without kms:Decrypt, and the errors a
//! user meets (bad SQL with its position, a corrupt Parquet object named, the memory limit).

use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

use crate::common::{self, ACCESS_KEY, Region, SECRET_KEY};

const ROOT: (&str, &str) = (ACCESS_KEY, SECRET_KEY);

/// Runs `text` as `creds`; returns status, JSON body and the raw response.
fn sql_as(r: &Region, creds: (&str, &str), text: &str) -> (u16, Value, common::RawResponse) {
    let resp = common::signed_post_to(
        r,
        creds,
        "sql",
        "/sql",
        &[("content-type", "application/sql".into())],
        text,
    );
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp.status, json, resp)
}

/// Runs `text` as root and expects success; returns the rows.
fn sql(r: &Region, text: &str) -> Vec<Value> {
    let (status, json, _) = sql_as(r, ROOT, text);
    assert_eq!(status, 200, "{text}: {json}");
    json["rows"].as_array().cloned().unwrap_or_default()
}

/// Runs `text` as `creds` and expects an error; returns (status, __type, message).
fn sql_err(r: &Region, creds: (&str, &str), text: &str) -> (u16, String, String) {
    let (status, json, _) = sql_as(r, creds, text);
    assert_ne!(status, 200, "{text} succeeded: {json}");
    (
        status,
        json["__type"].as_str().unwrap_or_default().to_owned(),
        json["message"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

async fn get(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

async fn keys(c: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    c.list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// 100 orders as CSV (with a header, `;` as delimiter, quoted fields holding `;` and
/// quotes) and as NDJSON: id, customer, amount (id * 1.5), note.
fn orders() -> (Vec<u8>, Vec<u8>) {
    let mut csv = String::from("id;customer;amount;note\n");
    let mut ndjson = String::new();
    for i in 1..=100 {
        let customer = format!("c{}", i % 7);
        let amount = f64::from(i) * 1.5;
        csv.push_str(&format!(
            "{i};{customer};{amount};\"say \"\"hi\"\"; {i}\"\n"
        ));
        ndjson.push_str(&format!(
            "{{\"id\":{i},\"customer\":\"{customer}\",\"amount\":{amount},\"note\":\"n{i}\"}}\n"
        ));
    }
    (csv.into_bytes(), ndjson.into_bytes())
}

/// The bucket `lake` holding the orders as CSV, and the table `orders` over them.
async fn lake_with_orders(r: &Region) -> aws_sdk_s3::Client {
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    let (csv, _) = orders();
    put(&c, "lake", "csv/orders.csv", csv).await;
    sql(
        r,
        "CREATE EXTERNAL TABLE orders STORED AS CSV LOCATION 's3://lake/csv/' \
         OPTIONS ('format.has_header' 'true', 'format.delimiter' ';')",
    );
    c
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{v} is not a number"))
}

#[tokio::test]
async fn every_format_and_compression_reads_the_same_rows() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    let (csv, ndjson) = orders();
    put(&c, "lake", "csv/orders.csv", csv.clone()).await;
    put(&c, "lake", "csvgz/orders.csv.gz", gzip(&csv)).await;
    put(&c, "lake", "json/orders.json", ndjson.clone()).await;
    put(
        &c,
        "lake",
        "jsonzst/orders.json.zst",
        zstd::encode_all(&ndjson[..], 3).expect("zstd"),
    )
    .await;
    let tables = [
        (
            "o_csv",
            "CSV",
            "s3://lake/csv/",
            "OPTIONS ('format.has_header' 'true', 'format.delimiter' ';')",
        ),
        (
            "o_csvgz",
            "CSV",
            "s3://lake/csvgz/",
            "OPTIONS ('format.has_header' 'true', 'format.delimiter' ';', 'format.compression' 'gzip')",
        ),
        ("o_json", "JSON", "s3://lake/json/", ""),
        (
            "o_jsonzst",
            "JSON",
            "s3://lake/jsonzst/",
            "OPTIONS ('format.compression' 'zstd')",
        ),
    ];
    for (name, fmt, loc, opts) in tables {
        sql(
            &r,
            &format!("CREATE EXTERNAL TABLE {name} STORED AS {fmt} LOCATION '{loc}' {opts}"),
        );
        let rows = sql(
            &r,
            &format!("SELECT count(*), sum(amount), max(id) FROM {name} WHERE customer = 'c3'"),
        );
        // Customers c3: ids 3, 10, …, 94 (14 of them).
        let ids: Vec<i32> = (1..=100).filter(|i| i % 7 == 3).collect();
        let sum: f64 = ids.iter().map(|i| f64::from(*i) * 1.5).sum();
        assert_eq!(num(&rows[0][0]), ids.len() as f64, "{name}");
        assert!(
            (num(&rows[0][1]) - sum).abs() < 1e-6,
            "{name}: {}",
            rows[0][1]
        );
        assert_eq!(num(&rows[0][2]), 94.0, "{name}");
    }
    // The quoted CSV field keeps its delimiter and its doubled quote.
    let rows = sql(&r, "SELECT note FROM o_csv WHERE id = 42");
    assert_eq!(rows[0][0], "say \"hi\"; 42");
    // An overwrite in this unversioned bucket (a new null version, the same length) is
    // read as the new bytes: nothing of the first read is kept for the key.
    let (csv_v2, _) = orders();
    let csv_v2 = String::from_utf8(csv_v2)
        .expect("utf8")
        .replace(";c3;", ";c4;");
    assert_eq!(csv_v2.len(), csv.len());
    put(&c, "lake", "csv/orders.csv", csv_v2.into_bytes()).await;
    let rows = sql(&r, "SELECT count(*) FROM o_csv WHERE customer = 'c3'");
    assert_eq!(num(&rows[0][0]), 0.0);
    put(&c, "lake", "csv/orders.csv", csv.clone()).await;
    let rows = sql(&r, "SELECT count(*) FROM o_csv WHERE customer = 'c3'");
    assert_eq!(num(&rows[0][0]), 14.0);

    // Parquet: written by COPY, read back as a table, through an ad-hoc path, and by the
    // S3 API as a Parquet file.
    let rows = sql(
        &r,
        "COPY (SELECT * FROM o_csv) TO 's3://lake/parquet/' STORED AS PARQUET",
    );
    assert_eq!(num(&rows[0][0]), 100.0);
    let written = keys(&c, "lake", "parquet/").await;
    assert!(!written.is_empty());
    for k in &written {
        let body = get(&c, "lake", k).await;
        assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"), "{k}");
    }
    let rows = sql(
        &r,
        "SELECT count(*), sum(amount) FROM 's3://lake/parquet/' WHERE customer = 'c3'",
    );
    assert_eq!(num(&rows[0][0]), 14.0);
    // One object named alone, read with the defaults (a header, commas): 100 rows.
    let rows = sql(&r, "SELECT count(*) FROM 's3://lake/csv/orders.csv'");
    assert_eq!(num(&rows[0][0]), 100.0);
    let rows = sql(&r, "SELECT count(*) FROM 's3://lake/json/*.json'");
    assert_eq!(num(&rows[0][0]), 100.0);
}

#[tokio::test]
async fn hive_partitions_are_pruned_to_the_objects_that_match() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    for year in [2025, 2026] {
        for month in 1..=3 {
            let mut body = String::from("id,amount\n");
            for i in 0..10 {
                body.push_str(&format!("{i},{}\n", year * 100 + month));
            }
            put(
                &c,
                "lake",
                &format!("sales/year={year}/month={month}/part-0.csv"),
                body.into_bytes(),
            )
            .await;
        }
    }
    sql(
        &r,
        "CREATE EXTERNAL TABLE sales (id INT, amount INT, year INT, month INT) STORED AS CSV \
         PARTITIONED BY (year, month) LOCATION 's3://lake/sales/' OPTIONS ('format.has_header' 'true')",
    );
    let (status, json, resp) = sql_as(
        &r,
        ROOT,
        "SELECT count(*), sum(amount) FROM sales WHERE year = 2026 AND month = 2",
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(num(&json["rows"][0][0]), 10.0);
    assert_eq!(num(&json["rows"][0][1]), 10.0 * 202602.0);
    assert_eq!(
        resp.header("x-feiyun-sql-objects-read"),
        Some("1"),
        "one partition's one object is read"
    );
    let (_, json, resp) = sql_as(&r, ROOT, "SELECT count(*) FROM sales WHERE year = 2025");
    assert_eq!(num(&json["rows"][0][0]), 30.0);
    assert_eq!(resp.header("x-feiyun-sql-objects-read"), Some("3"));
    let (_, json, resp) = sql_as(&r, ROOT, "SELECT count(*) FROM sales");
    assert_eq!(num(&json["rows"][0][0]), 60.0);
    assert_eq!(resp.header("x-feiyun-sql-objects-read"), Some("6"));
}

#[tokio::test]
async fn the_catalog_survives_a_restart_and_answers_show_describe_drop() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut r = Region::start_in(tmp.path());
    lake_with_orders(&r).await;
    let (status, code, msg) = sql_err(
        &r,
        ROOT,
        "CREATE EXTERNAL TABLE orders STORED AS CSV LOCATION 's3://lake/csv/'",
    );
    assert_eq!((status, code.as_str()), (409, "AlreadyExists"), "{msg}");
    sql(
        &r,
        "CREATE EXTERNAL TABLE IF NOT EXISTS orders STORED AS CSV LOCATION 's3://lake/csv/'",
    );
    r.terminate();
    let r = Region::start_in(tmp.path());
    let rows = sql(&r, "SHOW TABLES");
    assert!(
        rows.iter().any(|row| row
            .as_array()
            .is_some_and(|a| a.contains(&Value::from("orders")))),
        "{rows:?}"
    );
    let rows = sql(&r, "DESCRIBE orders");
    let cols: Vec<&str> = rows.iter().filter_map(|row| row[0].as_str()).collect();
    assert_eq!(cols, ["id", "customer", "amount", "note"]);
    let rows = sql(&r, "SELECT count(*) FROM orders");
    assert_eq!(num(&rows[0][0]), 100.0);
    sql(&r, "DROP TABLE orders");
    let (status, _, msg) = sql_err(&r, ROOT, "SELECT count(*) FROM orders");
    assert_eq!(status, 400);
    assert!(msg.contains("orders"), "{msg}");
    let (status, code, _) = sql_err(&r, ROOT, "DROP TABLE orders");
    assert_eq!((status, code.as_str()), (404, "NotFound"));
    sql(&r, "DROP TABLE IF EXISTS orders");
    // The data is the bucket's: dropping the table leaves it.
    assert_eq!(keys(&r.client(), "lake", "csv/").await.len(), 1);
}

#[tokio::test]
async fn ctas_and_insert_write_objects_and_a_failed_statement_leaves_nothing() {
    let r = Region::start();
    let c = lake_with_orders(&r).await;
    sql(
        &r,
        "CREATE TABLE by_customer WITH (location = 's3://lake/out/by_customer/', format = 'parquet') AS \
         SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer",
    );
    assert!(!keys(&c, "lake", "out/by_customer/").await.is_empty());
    let rows = sql(&r, "SELECT sum(n), count(*) FROM by_customer");
    assert_eq!((num(&rows[0][0]), num(&rows[0][1])), (100.0, 7.0));
    // A CTAS never writes into a location that holds objects.
    let (status, code, _) = sql_err(
        &r,
        ROOT,
        "CREATE TABLE again WITH (location = 's3://lake/out/by_customer/') AS SELECT 1 AS x",
    );
    assert_eq!((status, code.as_str()), (409, "AlreadyExists"));

    let before = keys(&c, "lake", "out/by_customer/").await.len();
    let rows = sql(&r, "INSERT INTO by_customer SELECT 'c99', 5, 7.5");
    assert_eq!(num(&rows[0][0]), 1.0);
    assert_eq!(keys(&c, "lake", "out/by_customer/").await.len(), before + 1);
    let rows = sql(&r, "SELECT sum(n), count(*) FROM by_customer");
    assert_eq!((num(&rows[0][0]), num(&rows[0][1])), (105.0, 8.0));

    // A statement that fails half-way publishes nothing and leaves no upload behind.
    let (status, _, msg) = sql_err(
        &r,
        ROOT,
        "COPY (SELECT id, CAST(CASE WHEN id < 90 THEN '1' ELSE 'x' END AS INT) AS v FROM orders) \
         TO 's3://lake/bad/' STORED AS CSV",
    );
    assert_eq!(status, 400, "{msg}");
    assert!(keys(&c, "lake", "bad/").await.is_empty());
    let uploads = c
        .list_multipart_uploads()
        .bucket("lake")
        .send()
        .await
        .expect("uploads");
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());

    // CSV and JSON results too, read back by the S3 API.
    sql(
        &r,
        "COPY (SELECT id, customer FROM orders WHERE id <= 3 ORDER BY id) TO 's3://lake/export/small.csv' STORED AS CSV",
    );
    let body = get(&c, "lake", "export/small.csv").await;
    assert_eq!(
        String::from_utf8_lossy(&body),
        "id,customer\n1,c1\n2,c2\n3,c3\n"
    );
    sql(
        &r,
        "COPY (SELECT id FROM orders WHERE id = 7) TO 's3://lake/export/one.json' STORED AS JSON",
    );
    let body = get(&c, "lake", "export/one.json").await;
    assert_eq!(String::from_utf8_lossy(&body).trim(), "{\"id\":7}");
}

#[tokio::test]
async fn a_statement_reads_and_writes_only_what_the_caller_may() {
    let r = Region::start();
    let c = r.client();
    for b in ["lake", "private"] {
        c.create_bucket().bucket(b).send().await.expect("bucket");
    }
    let (csv, _) = orders();
    put(&c, "lake", "open/orders.csv", csv.clone()).await;
    put(&c, "lake", "secret/orders.csv", csv.clone()).await;
    put(&c, "private", "orders.csv", csv).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":["sql:ExecuteStatement","sql:GetQueryHistory"],"Resource":"*"},
        {"Effect":"Allow","Action":"sql:CreateTable","Resource":"arn:aws:sql:*:*:table/open"},
        {"Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:aws:s3:::lake"},
        {"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::lake/open/*"},
        {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::lake/mine/*"}]}"#;
    let (ak, sk) = common::iam_user(&r, "analyst", policy);
    let me = (ak.as_str(), sk.as_str());
    let opts = "OPTIONS ('format.has_header' 'true', 'format.delimiter' ';')";

    // Tables need sql:CreateTable on their own ARN.
    let (status, code, msg) = sql_err(
        &r,
        me,
        &format!("CREATE EXTERNAL TABLE other STORED AS CSV LOCATION 's3://lake/open/' {opts}"),
    );
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{msg}");
    assert!(msg.contains("sql:CreateTable"), "{msg}");
    let (status, json, _) = sql_as(
        &r,
        me,
        &format!("CREATE EXTERNAL TABLE open STORED AS CSV LOCATION 's3://lake/open/' {opts}"),
    );
    assert_eq!(status, 200, "{json}");
    let (status, json, _) = sql_as(&r, me, "SELECT count(*) FROM open");
    assert_eq!(status, 200, "{json}");
    assert_eq!(num(&json["rows"][0][0]), 100.0);

    // Per object: the prefix it may list but not read.
    let (status, code, msg) = sql_err(&r, me, "SELECT count(*) FROM 's3://lake/secret/orders.csv'");
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{msg}");
    assert!(msg.contains("secret/orders.csv"), "{msg}");
    // Per bucket: a bucket it may not list.
    let (status, code, msg) = sql_err(&r, me, "SELECT count(*) FROM 's3://private/'");
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{msg}");
    // Writes: only where it may put.
    let (status, code, msg) = sql_err(
        &r,
        me,
        "COPY (SELECT 1 AS x) TO 's3://lake/open/out.csv' STORED AS CSV",
    );
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{msg}");
    assert_eq!(keys(&c, "lake", "open/").await.len(), 1);
    let (status, json, _) = sql_as(
        &r,
        me,
        "COPY (SELECT count(*) AS n FROM open) TO 's3://lake/mine/n.csv' STORED AS CSV",
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(keys(&c, "lake", "mine/").await, ["mine/n.csv"]);

    // SET is refused: a statement's settings are the region's (a spill directory set by a
    // caller would reach the host's file system).
    let probe = std::env::temp_dir().join(format!("feiyun-sql-set-{}", std::process::id()));
    let (status, _, msg) = sql_err(
        &r,
        me,
        &format!(
            "SET datafusion.runtime.temp_directory = '{}'",
            probe.display()
        ),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(!probe.exists());
    // The history shows a user its own statements only; the account's root sees them all.
    sql(&r, "SELECT 'root was here'");
    let mine = common::sigv4_get(&r, me, "sql", "/sql/history");
    assert_eq!(mine.status, 200, "{}", mine.body_text());
    let mine: Value = serde_json::from_slice(&mine.body).expect("json");
    let callers: Vec<&str> = mine["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .filter_map(|q| q["caller"].as_str())
        .collect();
    assert!(
        !callers.is_empty() && callers.iter().all(|c| c.ends_with(":user/analyst")),
        "{callers:?}"
    );
    let all = common::sigv4_get(&r, ROOT, "sql", "/sql/history");
    assert!(all.body_text().contains("root was here"));
    // Without sql:ExecuteStatement nothing runs at all.
    let (ak2, sk2) = common::iam_user(
        &r,
        "reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let (status, code, _) = sql_err(&r, (&ak2, &sk2), "SELECT 1");
    assert_eq!((status, code.as_str()), (403, "AccessDenied"));
    // A bucket policy's explicit Deny binds the statement as it binds S3 requests.
    c.put_bucket_policy()
        .bucket("lake")
        .policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"*"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::lake/open/*","Condition":{"StringEquals":{"aws:username":"analyst"}}}]}"#,
        )
        .send()
        .await
        .expect("policy");
    let (status, code, _) = sql_err(&r, me, "SELECT count(*) FROM open");
    assert_eq!((status, code.as_str()), (403, "AccessDenied"));
}

#[tokio::test]
async fn sse_kms_objects_are_read_only_with_kms_decrypt() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    let (status, key) = common::kms(&r, "CreateKey", serde_json::json!({}));
    assert_eq!(status, 200, "{key}");
    let key_arn = key["KeyMetadata"]["Arn"].as_str().expect("arn").to_owned();
    let (csv, _) = orders();
    c.put_object()
        .bucket("lake")
        .key("kms/orders.csv")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id(&key_arn)
        .body(ByteStream::from(csv.clone()))
        .send()
        .await
        .expect("put kms");
    c.put_object()
        .bucket("lake")
        .key("s3/orders.csv")
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(ByteStream::from(csv))
        .send()
        .await
        .expect("put sse-s3");
    let opts = "OPTIONS ('format.has_header' 'true', 'format.delimiter' ';')";
    for (name, loc) in [("k", "s3://lake/kms/"), ("s", "s3://lake/s3/")] {
        sql(
            &r,
            &format!("CREATE EXTERNAL TABLE {name} STORED AS CSV LOCATION '{loc}' {opts}"),
        );
        let rows = sql(&r, &format!("SELECT sum(id), max(note) FROM {name}"));
        assert_eq!(num(&rows[0][0]), 5050.0, "{name}");
    }
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"sql:ExecuteStatement","Resource":"*"},
        {"Effect":"Allow","Action":["s3:ListBucket","s3:GetObject"],"Resource":["arn:aws:s3:::lake","arn:aws:s3:::lake/*"]}]}"#;
    let (ak, sk) = common::iam_user(&r, "nokms", policy);
    let (status, json, _) = sql_as(&r, (&ak, &sk), "SELECT sum(id) FROM s");
    assert_eq!(status, 200, "SSE-S3 needs no KMS permission: {json}");
    let (status, code, msg) = sql_err(&r, (&ak, &sk), "SELECT sum(id) FROM k");
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{msg}");
    assert!(msg.contains("kms:Decrypt"), "{msg}");
}

#[tokio::test]
async fn errors_name_their_cause_and_the_server_stays_up() {
    let r = Region::start_env(&[("FEIYUN_SQL_MEMORY_MB", "32")]);
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    // Bad SQL: the parser's position.
    let (status, code, msg) = sql_err(&r, ROOT, "SELECT id FROM WHERE x = 1");
    assert_eq!((status, code.as_str()), (400, "InvalidQuery"));
    assert!(msg.contains("Line: 1, Column"), "{msg}");
    // An unknown table.
    let (status, _, msg) = sql_err(&r, ROOT, "SELECT * FROM nowhere");
    assert_eq!(status, 400);
    assert!(msg.contains("nowhere"), "{msg}");
    // A corrupt Parquet object is named.
    let mut junk = b"PAR1".to_vec();
    junk.extend(std::iter::repeat_n(7u8, 5000));
    junk.extend(b"PAR1");
    put(&c, "lake", "broken/part-0.parquet", junk).await;
    let (status, _, msg) = sql_err(&r, ROOT, "SELECT count(*) FROM 's3://lake/broken/'");
    assert_eq!(status, 400);
    assert!(msg.contains("broken/part-0.parquet"), "{msg}");
    // Over the memory limit: a clear error, and the next statement runs.
    let (status, code, msg) = sql_err(
        &r,
        ROOT,
        "SELECT array_agg(v) FROM (SELECT value || repeat('x', 100) AS v FROM generate_series(1, 2000000))",
    );
    assert_eq!(
        (status, code.as_str()),
        (400, "ResourcesExhausted"),
        "{msg}"
    );
    assert!(msg.contains("memory"), "{msg}");
    let rows = sql(&r, "SELECT 1 + 1");
    assert_eq!(num(&rows[0][0]), 2.0);
    // More than one statement at once is refused, not half-run.
    let (status, _, msg) = sql_err(&r, ROOT, "SELECT 1; SELECT 2");
    assert_eq!(status, 400, "{msg}");
    // Locations outside the region's buckets are refused.
    let (status, _, msg) = sql_err(&r, ROOT, "SELECT * FROM '/etc/passwd'");
    assert_eq!(status, 400, "{msg}");
    let (status, _, msg) = sql_err(
        &r,
        ROOT,
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'file:///etc/'",
    );
    assert_eq!(status, 400, "{msg}");
    // The history holds each of them.
    let resp = common::sigv4_get(&r, ROOT, "sql", "/sql/history");
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let h: Value = serde_json::from_slice(&resp.body).expect("json");
    let queries = h["queries"].as_array().expect("queries");
    assert!(queries.len() >= 8, "{h}");
    assert_eq!(queries[0]["status"], "FAILED");
    assert!(
        queries
            .iter()
            .any(|q| q["status"] == "SUCCEEDED" && q["text"] == "SELECT 1 + 1"),
        "{h}"
    );
}

#[tokio::test]
async fn the_cli_prints_a_table_json_and_csv() {
    let r = Region::start();
    let c = r.client();
    c.create_bucket()
        .bucket("lake")
        .send()
        .await
        .expect("bucket");
    let (csv, _) = orders();
    put(&c, "lake", "csv/orders.csv", csv).await;
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_feiyun"));
        cmd.arg("sql")
            .args(args)
            .env("FEIYUN_ENDPOINT", r.endpoint())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write");
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let create = "CREATE EXTERNAL TABLE orders STORED AS CSV LOCATION 's3://lake/csv/' \
                  OPTIONS ('format.has_header' 'true', 'format.delimiter' ';')";
    let (ok, out, err) = cli(&[create], None);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "CREATE TABLE");
    let q2 =
        "SELECT customer, count(*) AS n FROM orders GROUP BY customer ORDER BY customer LIMIT 2";
    let (ok, out, err) = cli(&[q2], None);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split('|').map(str::trim).collect::<Vec<_>>(),
        ["customer", "n"]
    );
    assert!(
        lines[2].contains("c0") && lines[2].trim_end().ends_with("14"),
        "{out}"
    );
    assert_eq!(lines.last().copied(), Some("(2 rows)"));
    let (ok, out, err) = cli(&["--json", q2], None);
    assert!(ok, "{err}");
    let first: Value = serde_json::from_str(out.lines().next().expect("line")).expect("json");
    assert_eq!(first, serde_json::json!({"customer": "c0", "n": 14}));
    let (ok, out, err) = cli(&["--csv"], Some(q2));
    assert!(ok, "{err}");
    assert_eq!(out, "customer,n\nc0,14\nc1,15\n");
    let file = r.data_dir.join("q.sql");
    std::fs::write(&file, q2).expect("write");
    let (ok, out, err) = cli(&["--csv", "-f", file.to_str().expect("path")], None);
    assert!(ok, "{err}");
    assert_eq!(out, "customer,n\nc0,14\nc1,15\n");
    let (ok, _, err) = cli(&["SELEC 1"], None);
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("InvalidQuery"), "{err}");
    let (ok, out, err) = cli(&["history", "--limit", "3"], None);
    assert!(ok, "{err}");
    assert!(out.contains("FAILED") && out.contains("SELEC 1"), "{out}");
}

#[tokio::test]
async fn a_dropped_connection_cancels_its_statement() {
    let r = Region::start();
    let text = "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3";
    let signer = common::sigv4::Signer {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        region: "us-east-1".into(),
    };
    let host = r.addr.to_string();
    let auth = signer.sign_as(
        "sql",
        "POST",
        "/sql",
        "",
        &[("host", host.clone())],
        &common::sigv4::sha256_hex(text.as_bytes()),
        &common::sigv4::now_amz_date(),
    );
    let mut req = format!(
        "POST /sql HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
        text.len()
    );
    for (k, v) in auth {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(text);
    let mut s = std::net::TcpStream::connect(r.addr).expect("connect");
    s.write_all(req.as_bytes()).expect("send");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(s);
    // The statement ends as CANCELLED within seconds, not after its hours of work.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = common::sigv4_get(&r, ROOT, "sql", "/sql/history");
        let h: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let found = h["queries"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["text"] == text).cloned());
        if let Some(q) = found {
            assert_eq!(q["status"], "CANCELLED", "{q}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statement was not cancelled: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The server answers the next statement at once.
    let rows = sql(&r, "SELECT 40 + 2");
    assert_eq!(num(&rows[0][0]), 42.0);
}
