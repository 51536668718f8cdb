//! A statement's result in the forms the edges send: JSON (columns with their types, rows
//! as arrays, numbers and booleans as JSON values, everything else as the text DataFusion
//! displays) and the Arrow IPC stream format.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{self as dt, DataType};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Value, json};

use crate::SqlError;
use crate::engine::{Outcome, Stats};

fn number(v: impl Into<serde_json::Number>) -> Value {
    Value::Number(v.into())
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(v.to_string()))
}

/// One cell as JSON.
fn cell(a: &dyn Array, fmt: &ArrayFormatter<'_>, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Int8 => number(a.as_primitive::<dt::Int8Type>().value(i)),
        DataType::Int16 => number(a.as_primitive::<dt::Int16Type>().value(i)),
        DataType::Int32 => number(a.as_primitive::<dt::Int32Type>().value(i)),
        DataType::Int64 => number(a.as_primitive::<dt::Int64Type>().value(i)),
        DataType::UInt8 => number(a.as_primitive::<dt::UInt8Type>().value(i)),
        DataType::UInt16 => number(a.as_primitive::<dt::UInt16Type>().value(i)),
        DataType::UInt32 => number(a.as_primitive::<dt::UInt32Type>().value(i)),
        DataType::UInt64 => number(a.as_primitive::<dt::UInt64Type>().value(i)),
        DataType::Float32 => float(f64::from(a.as_primitive::<dt::Float32Type>().value(i))),
        DataType::Float64 => float(a.as_primitive::<dt::Float64Type>().value(i)),
        _ => Value::String(fmt.value(i).to_string()),
    }
}

/// JSON a result may grow to, whatever its Arrow size (a dictionary column repeats one
/// value many times in its JSON).
const MAX_JSON: usize = 64 * 1024 * 1024;

/// The JSON size of a cell, near enough to bound the answer.
fn json_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 3,
        Value::Null => 5,
        _ => 24,
    }
}

/// The result as JSON: `columns`, `rows`, `row_count`, `truncated`, `tag`, `stats`. Rows
/// past `max_bytes` of JSON (at most 64 MiB) are cut and `truncated` says so.
pub fn to_json(out: &Outcome, stats: &Stats, max_bytes: usize) -> Result<Value, SqlError> {
    let budget = max_bytes.min(MAX_JSON);
    let (mut size, mut cut) = (0usize, false);
    let columns: Vec<Value> = out
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let opts = FormatOptions::default().with_null("");
    let mut rows = Vec::with_capacity(out.rows as usize);
    for b in &out.batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        for i in 0..b.num_rows() {
            let row: Vec<Value> = b
                .columns()
                .iter()
                .zip(&fmts)
                .map(|(c, f)| cell(c.as_ref(), f, i))
                .collect();
            size += row.iter().map(json_size).sum::<usize>() + 2;
            if size > budget {
                cut = true;
                break;
            }
            rows.push(Value::Array(row));
        }
        if cut {
            break;
        }
    }
    let row_count = rows.len();
    Ok(json!({
        "columns": columns,
        "rows": rows,
        "row_count": row_count,
        "truncated": out.truncated || cut,
        "tag": out.tag,
        "stats": stats_json(stats),
    }))
}

pub fn stats_json(stats: &Stats) -> Value {
    json!({
        "objects_read": stats.objects_read,
        "bytes_scanned": stats.bytes_read,
        "elapsed_ms": stats.elapsed.as_millis() as u64,
    })
}

/// The result as an Arrow IPC stream.
pub fn to_ipc(out: &Outcome) -> Result<Vec<u8>, SqlError> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &out.schema)
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        for b in &out.batches {
            w.write(b).map_err(|e| SqlError::Internal(e.to_string()))?;
        }
        w.finish().map_err(|e| SqlError::Internal(e.to_string()))?;
    }
    Ok(buf)
}
