//! The writer refuses a lake written with another schema version.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use common::{event, hasher, t, TempDir};
use warden_telemetry::schema::MARKER_FILE;
use warden_telemetry::{Config, Error, Telemetry};

#[test]
fn new_lake_gets_a_marker_and_reopens() {
    let dir = TempDir::new("schema-new");
    let tel = Telemetry::open(Config::new(dir.path())).unwrap();
    tel.record(event(1, t(0), &hasher())).unwrap();
    tel.close();
    drop(tel);
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(MARKER_FILE)).unwrap()).unwrap();
    assert_eq!(marker["events_schema_version"], 4);
    assert_eq!(marker["audit_schema_version"], 1);
    Telemetry::open(Config::new(dir.path())).unwrap().close();
}

#[test]
fn marker_of_another_version_is_refused() {
    let dir = TempDir::new("schema-other");
    // Every earlier version (SCHEMA.md §7): a v3 writer needs a new lake.
    for old in [1, 2, 3] {
        std::fs::write(
            dir.path().join(MARKER_FILE),
            format!(
                r#"{{"format":"warden-lake","events_schema_version":{old},"audit_schema_version":1}}"#
            ),
        )
        .unwrap();
        match Telemetry::open(Config::new(dir.path())) {
            Err(Error::IncompatibleSchema { found, .. }) => {
                assert!(found.contains(&format!("events v{old}")), "{found}")
            }
            other => panic!("expected a refusal of v{old}, got {other:?}"),
        }
    }
    std::fs::write(dir.path().join(MARKER_FILE), b"{not json").unwrap();
    assert!(matches!(
        Telemetry::open(Config::new(dir.path())),
        Err(Error::IncompatibleSchema { .. })
    ));
}

#[test]
fn unmarked_lake_with_foreign_parquet_is_refused() {
    let dir = TempDir::new("schema-foreign");
    let part = dir.path().join("events/dt=2024-01-01/hour=00");
    std::fs::create_dir_all(&part).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
    let f = std::fs::File::create(part.join("old.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    match Telemetry::open(Config::new(dir.path())) {
        Err(Error::IncompatibleSchema { found, .. }) => {
            assert!(found.contains("<none>"), "{found}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        !dir.path().join(MARKER_FILE).exists(),
        "a refused lake is not marked"
    );
}
